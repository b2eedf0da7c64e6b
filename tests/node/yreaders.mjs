#!/usr/bin/env node
// The reference readers (yjs, y-protocols) as an oracle for tests/test_fuzz.py: one JSON
// line per input on stdin, {"kind": "update" | "awareness", "hex": "..."}, one line per
// input on stdout, {"ok": true} or {"ok": false, "error": "..."}: whether a Yjs client
// can take what the server relays (Y.applyUpdate on a fresh doc; applyAwarenessUpdate,
// which JSON.parse()s every state).
import * as Y from 'yjs'
import * as awarenessProtocol from 'y-protocols/awareness'
import readline from 'node:readline'

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
const out = []
for await (const line of rl) {
  if (!line.trim()) continue
  const { kind, hex } = JSON.parse(line)
  const bytes = Uint8Array.from(Buffer.from(hex, 'hex'))
  try {
    if (kind === 'update') {
      Y.applyUpdate(new Y.Doc(), bytes)
    } else if (kind === 'awareness') {
      const awareness = new awarenessProtocol.Awareness(new Y.Doc())
      try {
        awarenessProtocol.applyAwarenessUpdate(awareness, bytes, 'fuzz')
      } finally {
        awareness.destroy() // its renewal timer would keep the process alive
      }
    } else {
      throw new Error(`unknown kind ${kind}`)
    }
    out.push('{"ok":true}')
  } catch (e) {
    out.push(JSON.stringify({ ok: false, error: String(e && e.message ? e.message : e) }))
  }
}
process.stdout.write(out.join('\n') + (out.length ? '\n' : ''))
