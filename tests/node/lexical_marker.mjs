#!/usr/bin/env node
// Bob types at the end of alice's text node in a Lexical document, then alice's undo,
// for tests/test_undo_lexical_marker.py.
//
//   node lexical_marker.mjs URL DOC plain|bold    alice's paragraph (a step), her text
//                                                 node and "Alice wrote this." (her next
//                                                 step); bob types after her characters
//                                                 (" Bob added this.": they go into her
//                                                 text node), or (bold) " Bob added " and
//                                                 a bold text node of his, "bobbold";
//                                                 then alice's undo over the websocket,
//                                                 and her redo
//
// Shaped as @lexical/yjs (CollabElementNode.append/splice, packages/lexical-yjs/src)
// makes it: the root a Y.XmlText, each paragraph a Y.XmlText embedded in it (attributes
// __type...), each text node a Y.Map (__type, __format, __style, __mode, __detail)
// embedded with insertEmbed before its characters, which follow it in the paragraph.
// A text node's characters are those up to the next embed: characters with no text
// node's map before them are "dangling", and every Lexical tab deletes them.
// Prints one JSON line: {"answer": alice's undo answer, "paragraph": bob's view of the
// paragraph after it, each embed as {"map": its entries}, text as strings; "redo": her
// redo's answer, "redone": the paragraph after it}.
import * as Y from 'yjs'
import WebSocket from 'ws'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import { WebsocketProvider } from 'y-websocket'

const [url, doc, mode] = process.argv.slice(2)

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

function textNode (format) {
  const m = new Y.Map()
  for (const [k, v] of [['__type', 'text'], ['__format', format], ['__style', ''], ['__mode', 0], ['__detail', 0]]) m.set(k, v)
  return m
}
const paragraphOf = (root) => root.toDelta()[0]?.insert
const shown = (p) => p.toDelta().map((o) => typeof o.insert === 'string' ? o.insert : { map: o.insert.toJSON() })
const plain = (p) => p === undefined ? '' : p.toDelta().filter((o) => typeof o.insert === 'string').map((o) => o.insert).join('')
const until = async (pred, ms = 10000) => {
  const t0 = Date.now()
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error('timed out')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}
const out = (value) => new Promise((resolve) => process.stdout.write(JSON.stringify(value) + '\n', resolve))

const alice = connect('alice')
await alice.synced
alice.ydoc.transact(() => { // the empty paragraph: one step
  const p = new Y.XmlText()
  alice.root.insertEmbed(0, p)
  for (const [k, v] of [['__type', 'paragraph'], ['__format', 0], ['__indent', 0]]) p.setAttribute(k, v)
})
await alice.request('close_group')
alice.ydoc.transact(() => { // her text node and sentence: the next
  const p = paragraphOf(alice.root)
  p.insertEmbed(0, textNode(0))
  p.insert(1, 'Alice wrote this.')
})
await alice.request('close_group')

const bob = connect('bob')
await bob.synced
await until(() => plain(paragraphOf(bob.root)) === 'Alice wrote this.')
const mine = paragraphOf(bob.root)
if (mode === 'bold') {
  bob.ydoc.transact(() => mine.insert(mine.length, ' Bob added '))
  bob.ydoc.transact(() => {
    mine.insertEmbed(mine.length, textNode(1))
    mine.insert(mine.length, 'bobbold')
  })
} else {
  bob.ydoc.transact(() => mine.insert(mine.length, ' Bob added this.'))
}
const typed = plain(mine)
await until(() => plain(paragraphOf(alice.root)) === typed)
const before = plain(mine)
const answer = await alice.request('undo')
await until(() => plain(paragraphOf(bob.root)) !== before)
const undone = shown(paragraphOf(bob.root))
const redo = await alice.request('redo')
await until(() => plain(paragraphOf(bob.root)) === before)
await out({ answer, paragraph: undone, redo, redone: shown(paragraphOf(bob.root)) })
process.exit(0)
