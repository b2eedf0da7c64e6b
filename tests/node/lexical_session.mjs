#!/usr/bin/env node
// Concurrent editing sessions on documents shaped as @lexical/yjs shapes them, for
// tests/test_attribution_lexical.py: the root is a Y.XmlText, each paragraph a Y.XmlText
// embedded in it (its attributes: __type and the like), each text node a Y.Map (its
// __type, __format…) embedded in the paragraph before its characters.
//
//   node lexical_session.mjs SEED STEPS
//   node lexical_session.mjs pair          (ann's paragraph, then bob's bold word)
//   node lexical_session.mjs deep DEPTH    (a hostile client's texts nested DEPTH deep,
//                                           then ann types into the root)
//
// Three people edit at once and see each other late. Each types only its own characters
// (ann capitals, bob small letters, cy digits) and stamps what it makes or changes with
// its name: a paragraph's "by", a text node's "by", "fmt" beside each __format it sets,
// "aby" beside each __indent it sets on a paragraph. Prints the log as the server would
// receive it: a JSON list of [actor, update as hex], one entry per transaction.
import * as Y from 'yjs'

/** `value` as JSON on stdout, written out: process.exit() drops what a pipe has not
 * taken yet (the 100 kB of `deep 5000` came out cut short, now and then) */
function print (value) {
  return new Promise((resolve) => process.stdout.write(JSON.stringify(value) + '\n', resolve))
}

if (process.argv[2] === 'deep') {
  const doc = new Y.Doc({ gc: false })
  const log = []
  let actor = 'eve'
  doc.on('update', (u) => log.push([actor, Buffer.from(u).toString('hex')]))
  const root = doc.get('root', Y.XmlText)
  doc.transact(() => {
    let at = root
    for (let k = Number(process.argv[3]); k > 0; k--) {
      const inner = new Y.XmlText()
      at.insertEmbed(0, inner)
      at = inner
    }
  })
  actor = 'ann'
  root.insert(1, 'typed')
  root.insert(0, 'more ')
  await print(log)
  process.exit(0)
}

if (process.argv[2] === 'pair') { // ann's paragraph, then bob's bold word after hers
  const ann = new Y.Doc()
  ann.clientID = 1
  const para = new Y.XmlText()
  ann.transact(() => {
    ann.get('root', Y.XmlText).insertEmbed(0, para)
    para.setAttribute('__type', 'paragraph')
    const m = new Y.Map()
    for (const [k, v] of [['__type', 'text'], ['__format', 0], ['by', 'ann']]) m.set(k, v)
    para.insertEmbed(0, m)
    para.insert(1, 'Hello ')
  })
  const bob = new Y.Doc()
  bob.clientID = 2
  Y.applyUpdate(bob, Y.encodeStateAsUpdate(ann))
  const theirs = bob.get('root', Y.XmlText).toDelta()[0].insert
  bob.transact(() => {
    const m = new Y.Map()
    for (const [k, v] of [['__type', 'text'], ['__format', 1], ['by', 'bob']]) m.set(k, v)
    theirs.insertEmbed(7, m)
    theirs.insert(8, 'world')
  })
  const hex = (u) => Buffer.from(u).toString('hex')
  await print([['ann', hex(Y.encodeStateAsUpdate(ann))],
    ['bob', hex(Y.encodeStateAsUpdate(bob, Y.encodeStateVector(ann)))]])
  process.exit(0)
}

const seed = Number(process.argv[2] ?? 1)
const steps = Number(process.argv[3] ?? 200)

let state = seed >>> 0 || 1
const rand = () => { // mulberry32
  state = (state + 0x6d2b79f5) >>> 0
  let t = state
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}
const pick = (n) => Math.floor(rand() * n)

const names = ['ann', 'bob', 'cy']
// (some take two or three bytes in UTF-8, one unit in UTF-16: paths count units)
const alphabets = ['ABCDEFGHIJKLMNOPÀÉÎ', 'abcdefghijklmnopéüß', '0123456789٣३']
const log = [] // [actor, hex]
const people = names.map((name, i) => {
  const doc = new Y.Doc({ gc: false })
  doc.clientID = 1000 + i
  const person = { name, doc, root: doc.get('root', Y.XmlText), seen: 0, counter: 0 }
  doc.on('update', (u, origin) => {
    if (origin !== 'remote') log.push([name, Buffer.from(u).toString('hex')])
  })
  return person
})
const word = (p) => {
  const abc = alphabets[names.indexOf(p.name)]
  let out = ''
  for (let k = 1 + pick(5); k > 0; k--) out += abc[pick(abc.length)]
  return out
}
const distinct = (p) => (names.indexOf(p.name) + 1) * 100000 + ++p.counter
const paragraphs = (p) => p.root.toDelta().map((d) => d.insert).filter((x) => x instanceof Y.XmlText)
const textNode = (p) => {
  const m = new Y.Map()
  m.set('__type', 'text')
  m.set('__format', 0)
  m.set('by', p.name)
  return m
}

const edit = (p) => {
  const paras = paragraphs(p)
  const r = rand()
  if (paras.length === 0 || r < 0.12) { // a new paragraph with a text node
    const para = new Y.XmlText()
    p.root.insertEmbed(pick(p.root.length + 1), para)
    para.setAttribute('__type', 'paragraph')
    para.setAttribute('by', p.name)
    para.insertEmbed(0, textNode(p))
    para.insert(1, word(p))
    return
  }
  const para = paras[pick(paras.length)]
  if (r < 0.55) { // typing into a paragraph
    para.insert(pick(para.length + 1), word(p))
  } else if (r < 0.65) { // a new text node inside a paragraph
    const at = pick(para.length + 1)
    para.insertEmbed(at, textNode(p))
    para.insert(at + 1, word(p))
  } else if (r < 0.8) { // deleting inside a paragraph (text nodes too)
    if (para.length > 0) {
      const at = pick(para.length)
      const n = 1 + pick(Math.min(4, para.length - at))
      // (a UTF-16 range: every character typed here is one unit)
      para.delete(at, n)
    }
  } else if (r < 0.9) { // formatting a text node
    const maps = para.toDelta().map((d) => d.insert).filter((x) => x instanceof Y.Map)
    if (maps.length) {
      const m = maps[pick(maps.length)]
      m.set('__format', distinct(p))
      m.set('fmt', p.name)
    }
  } else if (r < 0.95) { // a paragraph's indent
    para.setAttribute('__indent', distinct(p))
    para.setAttribute('aby', p.name)
  } else { // removing a paragraph
    const i = p.root.toDelta().findIndex((d) => d.insert === para)
    p.root.delete(i, 1)
  }
}

const sync = (p) => {
  for (; p.seen < log.length; p.seen++) {
    const [actor, hex] = log[p.seen]
    if (actor !== p.name) Y.applyUpdate(p.doc, Buffer.from(hex, 'hex'), 'remote')
  }
}

for (let step = 0; step < steps; step++) {
  const p = people[pick(people.length)]
  if (rand() < 0.35) sync(p)
  const n = rand() < 0.25 ? 2 + pick(2) : 1 // several edits in one transaction, at times
  p.doc.transact(() => { for (let k = n; k > 0; k--) edit(p) })
}
people.forEach(sync)
const texts = people.map((p) => JSON.stringify(p.root.toJSON()))
if (new Set(texts).size !== 1) throw new Error('the people did not converge')
console.log(JSON.stringify(log))
