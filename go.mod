module github.com/ds-sandbox/ds-sandbox

go 1.26.8
