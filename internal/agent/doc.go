// Package agent is the in-sandbox agent: the one process inside a sandbox's
// boundary that touches its files and processes and runs its code contexts
// (engines: ipykernel processes, or lean engines forked from a zygote). It serves HTTP/1.1 on a unix socket — JSON bodies, NDJSON
// streams, errors as api.Error — and package agentclient speaks that protocol
// for the manager, the backends and the SDK.
//
// The agent knows nothing about managers, backends or the daemon; a backend starts
// it (`ds-sandbox agent --socket …`) inside whatever isolation it provides and
// hands the manager the socket.
//
// Routes (all bodies JSON unless noted):
//
//	GET    /health
//	POST   /contexts                  api.CreateContextRequest → api.Context
//	GET    /contexts                  → []api.Context
//	POST   /contexts/{id}/restart     → api.Context
//	POST   /contexts/{id}/ready       → api.Context (the engine started and warmed; no code of the user's)
//	DELETE /contexts/{id}
//	POST   /execute                   api.ExecuteRequest → NDJSON api.ExecEvent
//	POST   /env                       api.SetEnvRequest (for the rest of the sandbox's life)
//	GET    /files?path=               → raw bytes (streamed)
//	PUT    /files?path=               raw bytes (streamed) → api.EntryInfo
//	DELETE /files?path=
//	GET    /files/stat?path=          → api.EntryInfo
//	GET    /files/list?path=&depth=   → []api.EntryInfo
//	POST   /files/mkdir?path=         → api.EntryInfo
//	POST   /files/rename              api.RenameRequest → api.EntryInfo
//	GET    /files/watch?path=&recursive=  → NDJSON api.FilesystemEvent until the client hangs up
//	POST   /processes                 api.ProcessRequest → NDJSON api.ProcessEvent (background: api.ProcessInfo)
//	GET    /processes                 → []api.ProcessInfo
//	GET    /processes/{pid}/stream    → NDJSON api.ProcessEvent (output from now on, then "end")
//	POST   /processes/{pid}/stdin     api.StdinRequest
//	POST   /processes/{pid}/signal    api.SignalRequest
//
// With --engine-handoff the agent also listens on engine.sock beside its
// socket for engines forked outside the sandbox (handoff.go).
package agent
