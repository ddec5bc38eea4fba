package client

// DatasetFilter narrows ListDatasets; zero fields match everything.
type DatasetFilter struct {
	// NameContains matches names containing it, ignoring case.
	NameContains string
	// Tags must all be present.
	Tags []string
	// Format is csv, tsv, parquet, json, excel, feather, text, dir or unknown.
	Format string
}
