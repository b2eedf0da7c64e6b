#!/usr/bin/env node
// A Lexical document as @lexical/yjs (CollabElementNode, CollabTextNode,
// CollabLineBreakNode) writes it, by two writers, for tests/test_readable_text.py: the
// root "root" a Y.XmlText; each element node (heading, paragraph, link, list, list item)
// a Y.XmlText embedded in its parent, its properties set as attributes (__type, __dir,
// __format, __indent, __style, __textFormat, __textStyle and its own); each text node a
// Y.Map of its properties (__type, __format, __style, __mode, __detail) embedded before
// its characters; a line break a Y.Map whose __type is linebreak.
//
//   node lexical_doc.mjs    prints [[actor, update as hex], ...]: alice's, then bob's
import * as Y from 'yjs'

const ELEMENT = { __dir: null, __format: 0, __indent: 0, __style: '', __textFormat: 0, __textStyle: '' }

function element (parent, at, type, extra = {}) {
  const t = new Y.XmlText()
  parent.insertEmbed(at, t)
  for (const [k, v] of Object.entries({ __type: type, ...ELEMENT, ...extra })) t.setAttribute(k, v)
  return t
}

/** a text node at `at` of `parent`: its map, then its characters; the offset after it */
function textNode (parent, at, text, format = 0) {
  const m = new Y.Map()
  for (const [k, v] of Object.entries({ __type: 'text', __format: format, __style: '', __mode: 0, __detail: 0 })) m.set(k, v)
  parent.insertEmbed(at, m)
  parent.insert(at + 1, text)
  return at + 1 + text.length
}

function lineBreak (parent, at) {
  const m = new Y.Map()
  m.set('__type', 'linebreak')
  parent.insertEmbed(at, m)
  return at + 1
}

const log = []
const alice = new Y.Doc()
alice.clientID = 1
const root = alice.get('root', Y.XmlText)
let para
alice.transact(() => {
  textNode(element(root, 0, 'heading', { __tag: 'h1' }), 0, 'Notes')
  para = element(root, 1, 'paragraph')
  textNode(para, 0, 'Alice one.')
  const p = element(root, 2, 'paragraph')
  let at = textNode(p, 0, 'See ')
  const link = element(p, at, 'link', { __url: 'https://x.test', __rel: 'noreferrer', __target: null, __title: null })
  textNode(link, 0, 'the site')
  at = textNode(p, at + 1, '.')
  textNode(p, lineBreak(p, at), 'next line')
  element(root, 3, 'paragraph')
  const list = element(root, 4, 'list', { __listType: 'bullet', __start: 1, __tag: 'ul' })
  textNode(element(list, 0, 'listitem', { __value: 1 }), 0, 'one')
  textNode(element(list, 1, 'listitem', { __value: 2 }), 0, 'two')
})
log.push(['alice', Y.encodeStateAsUpdate(alice)])

const bob = new Y.Doc()
bob.clientID = 2
Y.applyUpdate(bob, log[0][1])
const before = Y.encodeStateVector(bob)
const bobs = bob.get('root', Y.XmlText).toDelta()[1].insert // the second paragraph
bob.transact(() => {
  const at = textNode(bobs, bobs.length, ' bob plain ')
  textNode(bobs, at, 'bobbold', 1)
})
log.push(['bob', Y.encodeStateAsUpdate(bob, before)])

process.stdout.write(JSON.stringify(log.map(([a, u]) => [a, Buffer.from(u).toString('hex')])) + '\n')
