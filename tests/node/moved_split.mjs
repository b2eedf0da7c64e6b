#!/usr/bin/env node
// Bob's Enter in a Lexical document moves alice's word, for tests/test_undo_moved.py.
//
//   node moved_split.mjs URL DOC exact|space    alice types a sentence (one step), then
//                                                " alice-word" (her next step); bob's Enter
//                                                before " alice-word" (exact) or after its
//                                                space (space)
//   node moved_split.mjs URL DOC read           the paragraphs' texts
//
// Shaped and split as @lexical/yjs 0.52 does it (seen in its updates): the root is a
// Y.XmlText, each paragraph a Y.XmlText embedded in it (attributes __type...), its text
// node a Y.Map embedded before its characters. Enter in the middle of a text node
// deletes the characters after the caret from the paragraph and inserts a new paragraph
// after it, with a new text node and a copy of those characters: bob's items now.
// Prints one JSON line: {"paragraphs": [...]}.
import * as Y from 'yjs'
import WebSocket from 'ws'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import { WebsocketProvider } from 'y-websocket'

const [url, doc, mode] = process.argv.slice(2)
const SENTENCE = 'A sentence here.'
const WORD = ' alice-word'

function connect (user) {
  const ydoc = new Y.Doc()
  const provider = new WebsocketProvider(url, doc, ydoc, { WebSocketPolyfill: WebSocket, params: { user } })
  const answers = new Map()
  provider.messageHandlers[100] = (_encoder, decoder) => {
    const answer = JSON.parse(decoding.readVarString(decoder))
    answers.get(answer.id)?.(answer)
  }
  let id = 0
  const request = (type) => new Promise((resolve) => {
    answers.set(++id, resolve)
    const e = encoding.createEncoder()
    encoding.writeVarUint(e, 100)
    encoding.writeVarString(e, JSON.stringify({ type, id }))
    provider.ws.send(encoding.toUint8Array(e))
  })
  const synced = new Promise((resolve) => provider.once('sync', resolve))
  return { ydoc, provider, request, synced, root: ydoc.get('root', Y.XmlText) }
}

function paragraph (attrs) {
  const p = new Y.XmlText()
  for (const [k, v] of Object.entries({ __type: 'paragraph', __format: 0, __indent: 0, ...attrs })) p.setAttribute(k, v)
  return p
}
function textNode () {
  const m = new Y.Map()
  for (const [k, v] of [['__type', 'text'], ['__format', 0], ['__style', ''], ['__mode', 0], ['__detail', 0]]) m.set(k, v)
  return m
}
const texts = (root) => root.toDelta().filter((op) => op.insert instanceof Y.XmlText)
  .map((op) => op.insert.toDelta().filter((o) => typeof o.insert === 'string').map((o) => o.insert).join(''))
const until = async (pred, ms = 10000) => {
  const t0 = Date.now()
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error('timed out')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

const out = (value) => new Promise((resolve) => process.stdout.write(JSON.stringify(value) + '\n', resolve))

if (mode === 'read') {
  const r = connect('reader')
  await r.synced
  await out({ paragraphs: texts(r.root) })
  process.exit(0)
}

const alice = connect('alice')
await alice.synced
alice.ydoc.transact(() => { // the paragraph and the sentence: one step
  const p = paragraph()
  alice.root.insertEmbed(0, p)
  p.insertEmbed(0, textNode())
  p.insert(1, SENTENCE)
})
await alice.request('close_group')
const para = alice.root.toDelta()[0].insert
for (const ch of WORD) para.insert(para.length, ch) // typed: a transaction per key

const bob = connect('bob')
await bob.synced
await until(() => texts(bob.root)[0] === SENTENCE + WORD)
const at = 1 + SENTENCE.length + (mode === 'space' ? 1 : 0) // after the text node's embed
bob.ydoc.transact(() => {
  const mine = bob.root.toDelta()[0].insert
  const tail = (SENTENCE + WORD).slice(at - 1)
  mine.delete(at, tail.length)
  const p = paragraph()
  bob.root.insertEmbed(1, p)
  p.insertEmbed(0, textNode())
  p.insert(1, tail)
})
await until(() => texts(alice.root).length === 2)
await out({ paragraphs: texts(alice.root) })
process.exit(0)
