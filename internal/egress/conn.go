package egress

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// activity tracks the last byte moved on a client connection and the
// upstream connections serving it, so one watchdog can close them all when
// the flow has been idle (in both directions) for Timeouts.Idle.
type activity struct {
	last  atomic.Int64 // unix nanoseconds
	mu    sync.Mutex
	conns []net.Conn
}

func (a *activity) touch() { a.last.Store(time.Now().UnixNano()) }

func (a *activity) add(c net.Conn) net.Conn {
	a.mu.Lock()
	a.conns = append(a.conns, c)
	a.mu.Unlock()
	return &activeConn{Conn: c, act: a}
}

func (a *activity) closeAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.conns {
		c.Close()
	}
}

// watch closes every connection of a once it has been idle for idle; it
// returns when ctx is done.
func (a *activity) watch(ctx context.Context, idle time.Duration) {
	t := time.NewTicker(max(idle/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if time.Since(time.Unix(0, a.last.Load())) > idle {
				a.closeAll()
				return
			}
		}
	}
}

// activeConn records activity on every successful read and write.
type activeConn struct {
	net.Conn
	act *activity
}

func (c *activeConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.act.touch()
	}
	return n, err
}

func (c *activeConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n > 0 {
		c.act.touch()
	}
	return n, err
}

// CloseWrite half-closes when the underlying connection can.
func (c *activeConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// tunnel copies bytes both ways between the client (reading through its
// buffered reader, which may hold bytes already peeked) and up, half-closing
// each side at EOF, until both directions are done.
func tunnel(c *conn, up net.Conn) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(up, c.br)
		closeWrite(up)
	}()
	io.Copy(c.Conn, up)
	closeWrite(c.Conn)
	wg.Wait()
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
