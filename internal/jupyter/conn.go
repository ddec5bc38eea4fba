package jupyter

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"sync"
	"time"

	"github.com/go-zeromq/zmq4"
)

// Channel names, also used as message.Channel.
const (
	chanShell   = "shell"
	chanControl = "control"
	chanStdin   = "stdin"
	chanIOPub   = "iopub"
)

// dialRetry is both go-zeromq's connect() retry interval and our back-off
// between handshake attempts.
const dialRetry = 5 * time.Millisecond

// maxInboxBytes bounds the message contents waiting in one inbox. A cell that
// prints faster than its consumer handles the output would otherwise grow the
// inbox without limit (decoding is slower than receiving).
const maxInboxBytes = 32 << 20

// inbox is a queue of messages for one request. Pumps push without blocking
// until maxInboxBytes wait in it; then the pump waits for the consumer (the
// kernel's own socket buffers absorb the rest), so memory stays bounded.
// notify (capacity 1) wakes the consumer; close (at unregister) releases a
// waiting pump and makes later pushes drop.
type inbox struct {
	notify chan struct{}

	mu     sync.Mutex
	room   *sync.Cond
	msgs   []*message
	size   int
	closed bool
}

func newInbox() *inbox {
	in := &inbox{notify: make(chan struct{}, 1)}
	in.room = sync.NewCond(&in.mu)
	return in
}

func (in *inbox) push(m *message) {
	in.mu.Lock()
	for in.size > maxInboxBytes && !in.closed {
		in.room.Wait()
	}
	if in.closed {
		in.mu.Unlock()
		return
	}
	in.msgs = append(in.msgs, m)
	in.size += len(m.Content)
	in.mu.Unlock()
	select {
	case in.notify <- struct{}{}:
	default:
	}
}

// take removes and returns every queued message, oldest first.
func (in *inbox) take() []*message {
	in.mu.Lock()
	defer in.mu.Unlock()
	msgs := in.msgs
	in.msgs, in.size = nil, 0
	in.room.Broadcast()
	return msgs
}

// close releases a pump waiting for room; later messages are dropped.
func (in *inbox) close() {
	in.mu.Lock()
	in.closed = true
	in.room.Broadcast()
	in.mu.Unlock()
}

// register routes messages whose parent msg_id is id to in.
func (k *Kernel) register(id string, in *inbox) {
	k.mu.Lock()
	k.inboxes[id] = in
	k.mu.Unlock()
}

// unregister stops routing for the given msg_ids; later messages are dropped.
func (k *Kernel) unregister(ids ...string) {
	k.mu.Lock()
	for _, id := range ids {
		if in := k.inboxes[id]; in != nil {
			in.close()
		}
		delete(k.inboxes, id)
	}
	k.mu.Unlock()
}

// route hands m to the inbox of its parent request, or drops it.
func (k *Kernel) route(m *message) {
	k.mu.Lock()
	in := k.inboxes[m.ParentID]
	k.mu.Unlock()
	if in != nil {
		in.push(m)
	}
}

// send signs and sends a new message on s. If in is not nil, replies to the
// message are routed to it (registered before sending, so none is missed);
// the caller unregisters the returned msg_id.
func (k *Kernel) send(s zmq4.Socket, msgType string, content any, parent json.RawMessage, in *inbox) (string, error) {
	frames, id, err := k.signer.encode(msgType, content, parent)
	if err != nil {
		return "", err
	}
	if in != nil {
		k.register(id, in)
	}
	if err := s.SendMulti(zmq4.NewMsgFrom(frames...)); err != nil {
		k.unregister(id)
		return "", fmt.Errorf("send %s: %w", msgType, err)
	}
	return id, nil
}

// dial connects one socket of the given channel to endpoint. It retries
// connect() every dialRetry (the kernel binds its sockets a moment after it
// starts) and also retries failed ZMTP handshakes, which happen when a dying
// peer resets the connection. It gives up when ctx or the kernel ends.
//
// Each socket lives on its own child of k.ctx so that an abandoned Dial can
// be cancelled without racing a concurrent socket Close.
func (k *Kernel) dial(ctx context.Context, channel, endpoint string) (zmq4.Socket, error) {
	opts := []zmq4.Option{
		zmq4.WithDialerRetry(dialRetry),
		zmq4.WithDialerMaxRetries(-1),
		// go-zeromq logs to stderr by default.
		zmq4.WithLogger(log.New(io.Discard, "", 0)),
	}
	if channel == chanShell || channel == chanStdin {
		// The kernel routes input_request to the identity that sent the
		// execute_request, so shell and stdin must share one.
		opts = append(opts, zmq4.WithID(zmq4.SocketIdentity(k.identity)))
	}
	for {
		sctx, cancel := context.WithCancel(k.ctx)
		stop := context.AfterFunc(ctx, cancel)
		var s zmq4.Socket
		if channel == chanIOPub {
			s = zmq4.NewSub(sctx, opts...)
			// Subscribe before Dial: the subscription is then sent as
			// part of connecting.
			if err := s.SetOption(zmq4.OptionSubscribe, ""); err != nil {
				stop()
				cancel()
				s.Close()
				return nil, fmt.Errorf("subscribe iopub: %w", err)
			}
		} else {
			s = zmq4.NewDealer(sctx, opts...)
		}
		err := s.Dial(endpoint)
		aborted := !stop()
		if err == nil && !aborted {
			k.mu.Lock()
			k.sockets = append(k.sockets, socket{s, cancel})
			k.mu.Unlock()
			return s, nil
		}
		cancel()
		s.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connect %s: %w", channel, context.Cause(ctx))
		}
		if k.ctx.Err() != nil {
			return nil, fmt.Errorf("connect %s: kernel closed", channel)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect %s: %w", channel, context.Cause(ctx))
		case <-time.After(dialRetry):
		}
	}
}

// socket is a connected socket and the cancel func of its context.
type socket struct {
	zmq4.Socket
	cancel context.CancelFunc
}

// startPumps starts one receive goroutine per socket. Each exits when its
// socket fails (EOF when the kernel dies) or is closed; the first failure
// marks the kernel dead. pumpsDone is closed when all have exited.
func (k *Kernel) startPumps() {
	for ch, s := range map[string]zmq4.Socket{
		chanShell: k.shell, chanControl: k.control, chanStdin: k.stdin, chanIOPub: k.iopub,
	} {
		k.pumps.Add(1)
		go k.pump(ch, s)
	}
	go func() {
		k.pumps.Wait()
		close(k.pumpsDone)
	}()
}

func (k *Kernel) pump(channel string, s zmq4.Socket) {
	defer k.pumps.Done()
	for {
		zm, err := s.Recv()
		if err != nil {
			// go-zeromq delivers a connection's error once and then
			// blocks forever, so every error is terminal.
			k.markDead(fmt.Sprintf("%s connection lost: %v", channel, err))
			return
		}
		m, err := k.signer.decode(zm.Frames)
		if err != nil {
			continue // unsigned, forged or malformed: drop
		}
		m.Channel = channel
		if channel == chanIOPub {
			k.iopubOnce.Do(func() { close(k.iopubSeen) })
		}
		k.route(m)
	}
}
