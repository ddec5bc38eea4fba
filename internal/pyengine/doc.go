// Package pyengine runs Python cells in a lean engine: one Python process
// running our own small runner (dsengine.py, embedded) on IPython's
// InteractiveShell, spoken to over a unix socketpair. It has ipykernel's cell
// semantics (every MIME type, display/update_display, matplotlib figures as
// PNG at cell end, execution_count, In/Out, tracebacks without colours,
// streaming stdout/stderr including output written to fds 1 and 2 by
// subprocesses, input(), interrupts that keep the state) without ZeroMQ or
// a kernel per connection, and it can fork: a Zygote is one Python that has
// imported the preload list (numpy, pandas, matplotlib …) once, and Fork
// makes a new engine from it in milliseconds, sharing the imported pages
// copy-on-write.
//
// It reuses internal/jupyter's ExecuteRequest, Output and Reply, and its
// errors match jupyter.ErrDead, jupyter.ErrInterrupted and
// jupyter.ErrStartTimeout with errors.Is, with the same meaning as for
// jupyter.Kernel.
//
// # Protocol
//
// The engine's end of the socketpair is fd 3. Both directions carry frames: a
// 4-byte big-endian length n, then n bytes of one JSON object whose "t" field
// names its type. Go refuses a frame longer than MaxFrameBytes (the engine is
// then killed and the cell ends with ErrDead naming the size); the engine
// sends stream text in chunks of at most 1 MiB of UTF-8.
//
//	engine → Go  hello          {"t":"hello","pid":N} with the engine's pidfd attached (SCM_RIGHTS); first frame
//	Go → engine  execute        {"t":"execute","seq":S,"code":…,"silent":…,"store_history":…,"allow_stdin":…}
//	engine → Go  out            {"t":"out","seq":S,"type":"stream"|"display_data"|"update_display_data"|
//	                             "execute_result"|"error"|"clear_output", "name","text","data","metadata",
//	                             "transient":{"display_id"},"execution_count","ename","evalue","traceback","wait"}
//	engine → Go  input_request  {"t":"input_request","seq":S,"n":K,"prompt":…,"password":…}
//	Go → engine  input_reply    {"t":"input_reply","seq":S,"n":K,"value":…}
//	engine → Go  reply          {"t":"reply","seq":S,"status":"ok"|"error","execution_count",…}; the cell's last frame
//	engine → Go  fatal          {"t":"fatal","error":…}: the engine (or a fork's set-up) failed and exits
//
// Outputs of a cell come before its reply. An interrupt is SIGINT to the
// engine's process group: KeyboardInterrupt in the cell, whose state is kept;
// the engine defers a SIGINT that arrives while it reads or writes a frame.
//
// The zygote speaks the same framing on its own fd 3: it sends
// {"t":"ready"} (or "fatal", naming the preload module that failed) once its
// preload is done, then reads fork requests {"t":"fork","dir","env",
// "enter","fds":[namespace names]}, each with the new engine's socket end and
// the namespace fds attached, and answers {"t":"forked","pid"} or
// {"t":"forked","error"}.
//
// # Processes
//
// A cold engine (Start) is our child, leads its own session and has
// Pdeathsig SIGKILL. A forked engine is the zygote's child, which the
// zygote reaps (SIGCHLD). With Enter's pid namespace it is a grandchild
// instead: joining a pid namespace applies to children, so the zygote's child
// applies Enter's cgroup and namespaces, forks the engine and exits (the
// zygote reaps it); the engine is then an orphan that the nearest child
// subreaper (the agent) or the namespace's init adopts and reaps. Engine
// watches a forked engine through a pidfd the engine sends in its hello (no
// pid reuse race), reaps it itself if it became our child, and notices death
// by the pidfd or by EOF on the socket. A forked engine exits when its
// socket reaches EOF, so engines do not outlive the process that holds the
// Engine by more than their running cell.
//
// The zygote refuses to serve if it has more than one thread after the
// preload (threading.active_count() and /proc/self/task): forking a process
// with threads copies locks held by threads that do not exist in the child
// (OpenBLAS, ZeroMQ). StartZygote then fails with an error naming the module
// that started the thread; the caller falls back to Start.
//
// What forked engines share: the zygote's memory pages (read-only, copied on
// write; gc.freeze() keeps the collector from touching them), its address
// space layout (ASLR is per exec, not per fork) and Python's string hash
// seed. Each engine gets fresh random state (random and numpy's global
// RandomState are reseeded), its own session, working directory,
// environment and no descriptor of the zygote's.
//
// Package pyengine knows nothing about sandboxes: isolation is the caller's
// (Config.SysProcAttr, ForkConfig.Enter).
package pyengine
