#!/usr/bin/env node
// Documents whose blocks are Y.XmlTexts embedded in a Y.XmlText root, written with plain
// yjs calls the way the editors write them, for tests/test_history_blocks.py:
//
//   lexical  @lexical/yjs: root "root"; each block (paragraph, list, list item) a
//            Y.XmlText with __type and the like, embedded in the root or in its parent
//            block; each text node's properties a Y.Map embedded before its characters
//   slate    @slate-yjs/core: root "content"; each element a Y.XmlText whose attributes
//            are its properties (type), children embedded in it; each leaf's characters
//            formatted with its marks (bold)
//
//   node block_docs.mjs     prints {"lexical": HEX, "slate": HEX}: each a Yjs v1 update
import * as Y from 'yjs'

function lexical () {
  const doc = new Y.Doc()
  const root = doc.get('root', Y.XmlText)
  const block = (parent, at, type, extra = {}) => {
    const t = new Y.XmlText()
    parent.insertEmbed(at, t)
    t.setAttribute('__type', type)
    t.setAttribute('__format', 0)
    t.setAttribute('__indent', 0)
    for (const [k, v] of Object.entries(extra)) t.setAttribute(k, v)
    return t
  }
  const textNode = (parent, at, text, format) => {
    const m = new Y.Map()
    parent.insertEmbed(at, m)
    for (const [k, v] of Object.entries({ __type: 'text', __format: format, __style: '', __mode: 0, __detail: 0 })) m.set(k, v)
    parent.insert(at + 1, text)
    return at + 1 + text.length
  }
  doc.transact(() => {
    const p1 = block(root, 0, 'paragraph')
    textNode(p1, 0, 'Para one', 0)
    const list = block(root, 1, 'list', { __listType: 'bullet', __start: 1, __tag: 'ul' })
    const item = block(list, 0, 'listitem', { __value: 1 })
    textNode(item, 0, 'Item text', 0)
    const p2 = block(root, 2, 'paragraph')
    textNode(p2, textNode(p2, 0, 'Bold', 1), ' plain', 0)
  })
  return Y.encodeStateAsUpdate(doc)
}

// as @slate-yjs/core's slateElementToYText and slateNodesToInsertDelta write an element
function slateElement ({ children, ...properties }) {
  const t = new Y.XmlText()
  for (const [k, v] of Object.entries(properties)) t.setAttribute(k, v)
  t.applyDelta(children.map((child) => {
    if (child.text === undefined) return { insert: slateElement(child) }
    const { text, ...marks } = child
    return { insert: text, attributes: marks }
  }), { sanitize: false })
  return t
}

function slate () {
  const doc = new Y.Doc()
  const root = doc.get('content', Y.XmlText)
  root.applyDelta([
    { type: 'heading-one', children: [{ text: 'Title of the doc' }] },
    { type: 'paragraph', children: [{ text: 'First ' }, { text: 'bold', bold: true }, { text: ' here.' }] },
    { type: 'bulleted-list', children: [{ type: 'list-item', children: [{ text: 'one' }] }, { type: 'list-item', children: [{ text: 'two' }] }] },
    { type: 'paragraph', children: [{ text: 'Last.' }] }
  ].map((element) => ({ insert: slateElement(element) })), { sanitize: false })
  return Y.encodeStateAsUpdate(doc)
}

const hex = (u) => Buffer.from(u).toString('hex')
process.stdout.write(JSON.stringify({ lexical: hex(lexical()), slate: hex(slate()) }) + '\n')
