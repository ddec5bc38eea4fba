// E2B's unmodified JS SDKs against a real ds-sandbox daemon. Run by
// scripts/test-e2b-node.sh, which sets E2B_API_URL, E2B_SANDBOX_URL (both the
// daemon) and E2B_API_KEY. Uses only the SDKs' public API.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox as BaseSandbox, CommandExitError, SandboxNotFoundError, FileType, NotFoundError } from 'e2b'
import { Sandbox } from '@e2b/code-interpreter'

for (const v of ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_API_KEY']) {
  assert.ok(process.env[v], `${v} must be set (run scripts/test-e2b-node.sh)`)
}

let sbx // one code-interpreter sandbox shared by the data-plane tests

before(async () => {
  sbx = await Sandbox.create({ timeoutMs: 120_000, metadata: { suite: 'e2b-node' }, envs: { FROM_CREATE: 'yes' } })
})

after(async () => {
  if (sbx) await sbx.kill()
})

const waitFor = async (cond, ms = 5000) => {
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (await cond()) return true
    await new Promise((r) => setTimeout(r, 50))
  }
  return false
}

test('Sandbox.create / getInfo / list / setTimeout / connect / kill', async () => {
  const s = await BaseSandbox.create('base', { timeoutMs: 60_000, metadata: { who: 'lifecycle' } })
  assert.match(s.sandboxId, /^[a-z0-9]+$/)
  const info = await s.getInfo()
  assert.equal(info.sandboxId, s.sandboxId)
  assert.equal(info.templateId, 'base')
  assert.deepEqual(info.metadata, { who: 'lifecycle' })
  assert.equal(info.state, 'running')
  assert.ok(info.endAt.getTime() - Date.now() <= 61_000)

  const listed = await BaseSandbox.list({ query: { metadata: { who: 'lifecycle' } } }).nextItems()
  assert.deepEqual(listed.map((x) => x.sandboxId), [s.sandboxId])
  const none = await BaseSandbox.list({ query: { metadata: { who: 'nobody' } } }).nextItems()
  assert.equal(none.length, 0)

  await s.setTimeout(600_000)
  const later = await s.getInfo()
  assert.ok(later.endAt.getTime() - Date.now() > 500_000)

  const again = await BaseSandbox.connect(s.sandboxId)
  assert.equal(again.sandboxId, s.sandboxId)
  assert.equal((await again.commands.run('echo connected')).stdout, 'connected\n')
  assert.equal(await again.isRunning(), true)

  assert.equal(await s.kill(), true)
  assert.equal(await BaseSandbox.kill(s.sandboxId), false)
  await assert.rejects(BaseSandbox.getInfo(s.sandboxId), SandboxNotFoundError)
  await assert.rejects(BaseSandbox.connect(s.sandboxId), SandboxNotFoundError)
  assert.equal(await s.isRunning(), false)
})

test('a sandbox dies when its timeout passes', async () => {
  const s = await BaseSandbox.create({ timeoutMs: 1500 })
  assert.equal(await s.isRunning(), true)
  assert.ok(await waitFor(async () => !(await s.isRunning()), 10_000))
  await assert.rejects(s.getInfo(), SandboxNotFoundError)
  await assert.rejects(s.commands.run('true'))
})

test('list pages with nextToken', async () => {
  const a = await BaseSandbox.create({ metadata: { page: 'p' } })
  const b = await BaseSandbox.create({ metadata: { page: 'p' } })
  try {
    const pager = BaseSandbox.list({ query: { metadata: { page: 'p' } }, limit: 1 })
    const first = await pager.nextItems()
    assert.equal(first.length, 1)
    assert.equal(pager.hasNext, true)
    const second = await pager.nextItems()
    assert.equal(second.length, 1)
    assert.notEqual(first[0].sandboxId, second[0].sandboxId)
    assert.equal(pager.hasNext, false)
  } finally {
    await a.kill()
    await b.kill()
  }
})

// The daemon's default backend (scripts/test-e2b-node.sh reads it from /readyz).
const backend = process.env.DSS_BACKEND || 'local'

test('unsupported requests get E2B-shaped errors', async () => {
  if (backend === 'local') {
    // local cannot deny the network: refused, never ignored.
    await assert.rejects(BaseSandbox.create({ allowInternetAccess: false }), /network|not supported|deny/i)
    // updateNetwork reaches the daemon: on the local backend the network cannot
    // change (refused), and "allow everything" is what the sandbox has.
    await assert.rejects(sbx.updateNetwork({ denyOut: ['0.0.0.0/0'] }), /network/i)
  } else {
    // An isolating backend enforces both.
    const denied = await BaseSandbox.create({ allowInternetAccess: false })
    await denied.kill()
    await sbx.updateNetwork({ denyOut: ['0.0.0.0/0'] })
  }
  await sbx.updateNetwork({})
  await assert.rejects(sbx.pause(), /pause/)
  await assert.rejects(sbx.pty.create({ cols: 80, rows: 24, onData: () => {} }), /pty|pseudo-terminal/i)
  // The code interpreter answers 400 "language … is not supported"; the SDK
  // reports only the status line. (requestTimeoutMs: the SDK leaves its
  // request timer running when a runCode fails, which would keep node alive.)
  await assert.rejects(sbx.runCode('1', { language: 'javascript', requestTimeoutMs: 2000 }), /400/)
})

test('commands.run: output, exit codes, envs, cwd', async () => {
  const r = await sbx.commands.run('echo hello; echo oops >&2')
  assert.equal(r.exitCode, 0)
  assert.equal(r.stdout, 'hello\n')
  assert.equal(r.stderr, 'oops\n')

  await assert.rejects(sbx.commands.run('echo bad >&2; exit 3'), (err) => {
    assert.ok(err instanceof CommandExitError)
    assert.equal(err.exitCode, 3)
    assert.equal(err.stderr, 'bad\n')
    return true
  })

  const env = await sbx.commands.run('echo $FROM_CREATE $PER_RUN', { envs: { PER_RUN: 'run' } })
  assert.equal(env.stdout, 'yes run\n')

  await sbx.files.makeDir('cwdtest')
  const cwd = await sbx.commands.run('pwd', { cwd: 'cwdtest' })
  assert.match(cwd.stdout, /cwdtest\n$/)
})

test('commands.run: streaming callbacks, background + kill, stdin', async () => {
  const out = []
  const err = []
  await sbx.commands.run('for i in 1 2 3; do echo $i; sleep 0.05; done; echo e >&2', {
    onStdout: (d) => out.push(d),
    onStderr: (d) => err.push(d),
  })
  assert.equal(out.join(''), '1\n2\n3\n')
  assert.equal(err.join(''), 'e\n')

  const bg = await sbx.commands.run('sleep 30', { background: true })
  assert.ok(bg.pid > 0)
  const listed = await sbx.commands.list()
  assert.ok(listed.some((p) => p.pid === bg.pid))
  assert.equal(await bg.kill(), true)
  await assert.rejects(bg.wait(), CommandExitError)
  assert.equal(await sbx.commands.kill(999999), false)

  const later = await sbx.commands.run('sleep 0.5; echo later', { background: true })
  await later.disconnect()
  const again = await sbx.commands.connect(later.pid)
  assert.equal((await again.wait()).stdout, 'later\n')

  const cat = await sbx.commands.run('cat', { background: true, stdin: true })
  await sbx.commands.sendStdin(cat.pid, 'from stdin\n')
  await sbx.commands.closeStdin(cat.pid)
  const done = await cat.wait()
  assert.equal(done.stdout, 'from stdin\n')
})

test('commands.run: timeoutMs ends the command', async () => {
  const t0 = Date.now()
  await assert.rejects(sbx.commands.run('sleep 20', { timeoutMs: 1000 }))
  assert.ok(Date.now() - t0 < 10_000)
})

test('files: write / read / list / exists / getInfo / rename / remove / makeDir', async () => {
  const info = await sbx.files.write('dir1/a.txt', 'hello file')
  assert.equal(info.name, 'a.txt')
  assert.equal(await sbx.files.read('dir1/a.txt'), 'hello file')
  const bytes = await sbx.files.read('dir1/a.txt', { format: 'bytes' })
  assert.equal(Buffer.from(bytes).toString(), 'hello file')

  await sbx.files.write([
    { path: 'dir1/b.txt', data: 'b' },
    { path: 'dir1/c.bin', data: new Uint8Array([0, 1, 2, 255]).buffer },
  ])
  assert.deepEqual(Buffer.from(await sbx.files.read('dir1/c.bin', { format: 'bytes' })), Buffer.from([0, 1, 2, 255]))

  const entries = await sbx.files.list('dir1')
  assert.deepEqual(entries.map((e) => e.name).sort(), ['a.txt', 'b.txt', 'c.bin'])
  const a = entries.find((e) => e.name === 'a.txt')
  assert.equal(a.type, FileType.FILE)
  assert.equal(a.size, 10)

  assert.equal(await sbx.files.exists('dir1/a.txt'), true)
  assert.equal(await sbx.files.exists('dir1/nope'), false)
  const st = await sbx.files.getInfo('dir1')
  assert.equal(st.type, FileType.DIR)
  await assert.rejects(sbx.files.read('dir1/nope'), NotFoundError)

  assert.equal(await sbx.files.makeDir('dir2/sub'), true)
  assert.equal(await sbx.files.makeDir('dir2/sub'), false)

  const moved = await sbx.files.rename('dir1/a.txt', 'dir2/moved.txt')
  assert.equal(moved.name, 'moved.txt')
  assert.equal(await sbx.files.exists('dir1/a.txt'), false)
  assert.equal(await sbx.files.read('dir2/moved.txt'), 'hello file')

  await sbx.files.remove('dir2')
  assert.equal(await sbx.files.exists('dir2'), false)
})

test('files.watchDir', async () => {
  await sbx.files.makeDir('watched')
  const events = []
  const handle = await sbx.files.watchDir('watched', (ev) => events.push(ev))
  try {
    await sbx.files.write('watched/new.txt', 'x')
    assert.ok(await waitFor(() => events.some((e) => e.name === 'new.txt')), `events: ${JSON.stringify(events)}`)
  } finally {
    await handle.stop()
  }
})

test('runCode: stateful, results, onStdout', async () => {
  await sbx.runCode('x = 41')
  const r = await sbx.runCode('x + 1')
  assert.equal(r.text, '42')
  assert.equal(r.error, undefined)
  assert.ok(r.executionCount > 0)

  const lines = []
  const p = await sbx.runCode('for i in range(3): print(i)', { onStdout: (m) => lines.push(m.line) })
  assert.equal(lines.join(''), '0\n1\n2\n')
  assert.equal(p.logs.stdout.join(''), '0\n1\n2\n')

  const env = await sbx.runCode('import os; os.environ.get("E")', { envs: { E: 'v' } })
  assert.equal(env.text, 'v')
})

test('files written at /home/user are where code finds them (the default backend)', async () => {
  await sbx.files.write('/home/user/x.csv', 'a,b\n1,2\n3,4\n')
  const r = await sbx.runCode("import pandas as pd\nint(pd.read_csv('/home/user/x.csv').a.sum())")
  assert.equal(r.error, undefined)
  assert.equal(r.text, '4')
  const w = await sbx.runCode("open('/home/user/y.txt', 'w').write('from code')")
  assert.equal(w.error, undefined)
  assert.equal(await sbx.files.read('/home/user/y.txt'), 'from code')
})

test('runCode: png and html results', async () => {
  const html = await sbx.runCode('from IPython.display import HTML, display\ndisplay(HTML("<b>hi</b>"))')
  assert.equal(html.results[0].html, '<b>hi</b>')
  assert.ok(html.results[0].formats().includes('html'))

  const png = await sbx.runCode(
    'import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()'
  )
  const img = png.results.find((x) => x.png)
  assert.ok(img, JSON.stringify(png))
  assert.equal(Buffer.from(img.png, 'base64').subarray(1, 4).toString(), 'PNG')
})

test('runCode: errors and timeouts', async () => {
  const r = await sbx.runCode('1/0')
  assert.equal(r.error.name, 'ZeroDivisionError')
  assert.match(r.error.value, /division by zero/)
  assert.match(r.error.traceback, /ZeroDivisionError/)

  const errs = []
  await sbx.runCode('raise ValueError("boom")', { onError: (e) => errs.push(e.name) })
  assert.deepEqual(errs, ['ValueError'])

  await assert.rejects(sbx.runCode('import time; time.sleep(30)', { timeoutMs: 1500 }))
  const after = await sbx.runCode('1 + 1')
  assert.equal(after.text, '2')
})

test('code contexts: create / list / restart / remove', async () => {
  const ctx = await sbx.createCodeContext({ language: 'python' })
  assert.ok(ctx.id)
  assert.equal(ctx.language, 'python')
  await sbx.runCode('y = 5', { context: ctx })
  assert.equal((await sbx.runCode('y', { context: ctx })).text, '5')
  const other = await sbx.runCode('"y" in globals()')
  assert.equal(other.text, 'False')

  const all = await sbx.listCodeContexts()
  assert.ok(all.some((c) => c.id === ctx.id))

  await sbx.restartCodeContext(ctx)
  const gone = await sbx.runCode('y', { context: ctx })
  assert.equal(gone.error.name, 'NameError')

  await sbx.removeCodeContext(ctx)
  await assert.rejects(sbx.runCode('1', { context: ctx, requestTimeoutMs: 2000 }), NotFoundError)
})
