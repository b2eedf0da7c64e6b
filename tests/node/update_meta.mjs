#!/usr/bin/env node
// Yjs updates of every struct and content kind, with what yjs itself reads from them,
// for tests/test_update_meta.py (checks server/updates.py against the reference).
// Prints one JSON object per line: {name, update (hex), structs: [[client, clock, length,
// kind]], ds: [[client, clock, length]]}, where kind is "gc", "skip" or "item".
import * as Y from 'yjs'

const out = []
const emit = (name, update) => {
  const { structs, ds } = Y.decodeUpdate(update)
  const kinds = structs.map((s) => [s.id.client, s.id.clock, s.length,
    s.constructor === Y.GC ? 'gc' : s.constructor === Y.Skip ? 'skip' : 'item'])
  const dels = []
  for (const [client, items] of ds.clients) for (const d of items) dels.push([client, d.clock, d.len])
  out.push({ name, update: Buffer.from(update).toString('hex'), structs: kinds, ds: dels })
}
const capture = (doc) => {
  const ups = []
  doc.on('update', (u) => ups.push(u))
  return ups
}

// text: strings (astral characters count two), formatting, embeds, deletions
{
  const doc = new Y.Doc({ gc: false })
  const ups = capture(doc)
  const t = doc.getText('content')
  t.insert(0, 'hello world')
  t.insert(5, ' 😀 brave', { bold: true })
  t.insertEmbed(3, { image: 'x.png' })
  t.delete(1, 4)
  t.format(0, 6, { italic: true })
  ups.forEach((u, i) => emit(`text-${i}`, u))
  emit('text-full', Y.encodeStateAsUpdate(doc))
}
// the same with gc: deleted content becomes GC / ContentDeleted in the full state
{
  const doc = new Y.Doc()
  const t = doc.getText('content')
  t.insert(0, 'abcdefghij')
  t.delete(2, 5)
  const a = doc.getArray('list')
  a.insert(0, [{ nested: [1, 2, { deep: true }] }])
  a.delete(0, 1)
  // the entries of a deleted nested type are collected as GC structs
  const inner = new Y.Map()
  a.insert(0, [inner])
  inner.set('x', 'gone')
  inner.set('y', [1, 2])
  a.delete(0, 1)
  emit('gc-full', Y.encodeStateAsUpdate(doc))
}
// maps and arrays: every lib0 "any" kind, binary, nested types, subdocuments
{
  const doc = new Y.Doc({ gc: false })
  const ups = capture(doc)
  const m = doc.getMap('meta')
  m.set('n', 42)
  m.set('neg', -7)
  m.set('big', 2 ** 40)
  m.set('f', 3.25)
  m.set('b', false)
  m.set('t', true)
  m.set('nil', null)
  m.set('s', 'stríng ✓')
  m.set('obj', { a: [1, 'two', { three: null }], e: {} })
  m.set('bin', new Uint8Array([1, 2, 3, 250]))
  m.set('bigint', 12345678901234567890n)
  m.set('n', 43)
  const a = doc.getArray('list')
  a.insert(0, [1, 'x', [true, [false]], { k: 'v' }])
  a.insert(2, [new Y.Map(), new Y.Array(), new Y.Text('inner')])
  a.insert(0, [new Y.Doc({ guid: 'sub-1' })])
  a.delete(1, 2)
  ups.forEach((u, i) => emit(`any-${i}`, u))
  emit('any-full', Y.encodeStateAsUpdate(doc))
}
// XML: elements with names and attributes, text inside (what Tiptap writes)
{
  const doc = new Y.Doc({ gc: false })
  const ups = capture(doc)
  const f = doc.getXmlFragment('default')
  const p = new Y.XmlElement('paragraph')
  p.setAttribute('align', 'left')
  const x = new Y.XmlText()
  p.insert(0, [x])
  f.insert(0, [p, new Y.XmlElement('horizontalRule')])
  x.insert(0, 'Tiptap text', { bold: true })
  x.delete(0, 3)
  f.delete(1, 1)
  ups.forEach((u, i) => emit(`xml-${i}`, u))
  emit('xml-full', Y.encodeStateAsUpdate(doc))
}
// two clients; updates merged with a gap (a Skip struct); a delete-only update
{
  const a = new Y.Doc({ gc: false })
  const ups = capture(a)
  const t = a.getText('content')
  t.insert(0, 'one')
  t.insert(3, 'two')
  t.insert(6, 'three')
  const b = new Y.Doc({ gc: false })
  Y.applyUpdate(b, Y.encodeStateAsUpdate(a))
  const bu = capture(b)
  b.getText('content').insert(0, 'B')
  b.getText('content').delete(2, 3)
  emit('merged-gap', Y.mergeUpdates([ups[0], ups[2]]))
  emit('merged-two-clients', Y.mergeUpdates([...ups, ...bu]))
  emit('delete-only', bu[1])
  emit('diff', Y.encodeStateAsUpdate(b, Y.encodeStateVector(a)))
}
for (const o of out) process.stdout.write(JSON.stringify(o, (k, v) => typeof v === 'bigint' ? v.toString() : v) + '\n')
