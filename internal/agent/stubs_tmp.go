package agent

// Temporary stubs so the package builds while the services are written.
// Each is replaced by its real file.
