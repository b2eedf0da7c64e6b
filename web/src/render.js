// Documents written by other editors, drawn read-only: Tiptap/ProseMirror and the
// editors built on it (BlockNote, Milkdown: an XML root of elements), Lexical (a root of paragraphs, each a Y.XmlText with its text
// nodes' properties as Y.Maps embedded before their characters), Slate (@slate-yjs: a
// root of elements, each a Y.XmlText typed by its `type` attribute, its children
// embedded in it, its leaves' marks its characters' formatting), Quill (a Y.Text with
// formatting and embeds), and plain texts under any name.
//
// One model for everything drawn, the shape the server's blame and diff answers
// already have, so that the live document, a version, its blame and a diff are drawn
// by the same code:
//   element node  {element, attributes, children: [node...]}
//   text node     {attributes?, runs: [run...]}      (a diff's text node has `ops`)
//   run           {text, attributes?, embed?, node?} (`node`: an embedded shared type)
//   map node      {map: {...}}                      (only as a run's `node`)
// plus, from the server, `actor`, `seq` and (in a diff) `op` on nodes and runs.
//
// Nothing from a document is ever put in the page as HTML, a URL or a style: names
// become data attributes, text becomes text nodes, a link's target a tooltip.

import * as buffer from 'lib0/buffer'
import * as Y from 'yjs'
import { h } from './util.js'
import { visibleText } from './controls.js'

// ----- what a Y.Doc's roots are -----

/**
 * What each root of a synced Y.Doc holds, read from its items (a root that no code of
 * this page has asked for yet is untyped until then):
 * 'text' (characters only), 'rich' (characters with formatting, embeds or shared
 * types), 'xml' (elements and texts: ProseMirror's, Lexical's paragraphs), 'map',
 * 'array' (values, or shared types that are not XML nodes: Excalidraw's `elements`, an
 * array of Y.Maps), or 'empty'.
 * @param {Y.Doc} ydoc
 * @returns {Map<string, string>}
 */
export function rootKinds (ydoc) {
  const kinds = new Map()
  for (const [name, type] of ydoc.share) kinds.set(name, kindOf(type))
  return kinds
}

function kindOf (type) {
  if (type instanceof Y.XmlFragment) return 'xml'
  if (type instanceof Y.Map) return type.size ? 'map' : 'empty'
  if (type instanceof Y.Array) return type.length ? 'array' : 'empty'
  let chars = false
  let rich = false
  let types = false
  let xml = true // every shared type in it is an XML node
  let values = false
  for (let item = type._start; item !== null; item = item.right) {
    if (item.deleted) continue
    const c = item.content
    if (c instanceof Y.ContentString) chars = true
    else if (c instanceof Y.ContentFormat || c instanceof Y.ContentEmbed) rich = true
    else if (c instanceof Y.ContentType) {
      types = true
      if (!isXmlNode(c.type)) xml = false
    } else values = true // ContentAny, ContentJSON, ContentBinary, ContentDoc
  }
  if (values) return 'array'
  const typedText = type instanceof Y.Text
  if (!chars && !rich && !types) return type._map.size && !typedText ? 'map' : 'empty'
  // only shared types: XML elements and texts are a ProseMirror or Lexical tree; maps,
  // arrays or texts are an array's items (Excalidraw's `elements`: an array of Y.Maps)
  if (types && !chars && !rich && !typedText) return xml ? 'xml' : 'array'
  return rich || types ? 'rich' : 'text'
}

function isXmlNode (type) {
  return type instanceof Y.XmlElement || type instanceof Y.XmlText || type instanceof Y.XmlHook
}

/**
 * Which root the page's text editor may edit, or none: a document whose text is plain
 * (the page's own `content`, or the one text root of an editor that keeps plain text,
 * such as y-monaco's `monaco`) is edited; one with structure or formatting the page
 * cannot edit without losing it is only shown.
 * @param {Map<string, string>} kinds
 * @returns {{edit: string} | {show: string[]}}
 */
export function chooseRoot (kinds) {
  const filled = [...kinds].filter(([, kind]) => kind !== 'empty')
  const content = kinds.get('content')
  if (content === 'text') return { edit: 'content' }
  const drawn = filled.filter(([, kind]) => kind !== 'map' && kind !== 'array')
  // nothing yet: a new document, written here; only maps and arrays (a board's shapes,
  // an app's state): shown as they are, never given a stray text root by a keystroke
  if (!drawn.length) return filled.length ? { show: [] } : { edit: 'content' }
  if (drawn.length === 1 && drawn[0][1] === 'text') return { edit: drawn[0][0] }
  return { show: drawn.map(([name]) => name).sort() }
}

// ----- the model, from Yjs types -----

/**
 * The model of one root of `ydoc`, typed as `kind` says (rootKinds), or null for a
 * map or array (drawn as JSON).
 */
export function modelOfRoot (ydoc, name, kind) {
  if (kind === 'xml') return { nodes: ydoc.getXmlFragment(name).toArray().map((kid) => nodeOf(kid)) }
  if (kind === 'text' || kind === 'rich') return { nodes: [{ runs: runsOfDelta(ydoc.getText(name).toDelta()) }] }
  return null
}

export function jsonOfRoot (ydoc, name, kind) {
  if (kind === 'map') return jsonable(ydoc.getMap(name).toJSON())
  if (kind === 'array') return jsonable(ydoc.getArray(name).toJSON())
  return null
}

/**
 * A binary value (a Uint8Array: a board's thumbnail, a file) as the server renders it,
 * {"$bytes": base64} (docs/history.md), at any depth: JSON.stringify wrote {"0": 99}.
 */
function jsonable (value) {
  if (value instanceof Uint8Array) return { $bytes: buffer.toBase64(value) }
  if (Array.isArray(value)) return value.map(jsonable)
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, jsonable(v)]))
  }
  return value
}

// Nesting deeper than this is not drawn (a hostile client's 5,000 texts nested in one
// another overflowed the page's stack, and no editor lays out such a thing)
const MAX_DEPTH = 100

function nodeOf (type, depth = 0) {
  if (depth > MAX_DEPTH) return { cut: true }
  if (typeof type === 'string') return { runs: [{ text: type }] }
  if (type instanceof Y.XmlElement) {
    return {
      element: type.nodeName,
      attributes: type.getAttributes(),
      children: type.toArray().map((kid) => nodeOf(kid, depth + 1))
    }
  }
  if (type instanceof Y.XmlText) return { attributes: type.getAttributes(), runs: runsOfDelta(type.toDelta(), depth) }
  if (type instanceof Y.Text) return { runs: runsOfDelta(type.toDelta(), depth) }
  if (type instanceof Y.XmlHook) return { element: type.hookName, attributes: {}, children: [] }
  if (type instanceof Y.Map) return { map: type.toJSON() }
  return { map: type && typeof type.toJSON === 'function' ? type.toJSON() : {} }
}

function runsOfDelta (delta, depth = 0) {
  return delta.map((op) => {
    const attributes = op.attributes || undefined
    if (typeof op.insert === 'string') return { text: op.insert, attributes }
    if (op.insert instanceof Y.AbstractType) return { text: '\ufffc', attributes, node: nodeOf(op.insert, depth + 1) }
    return { text: '\ufffc', attributes, embed: op.insert }
  })
}

// ----- drawing -----

// Maps, not objects: a name read from a document (an element `constructor`, a Lexical
// `__type` of `toString`) must not find Object.prototype's members and draw a function
const BLOCKS = new Map([
  ['paragraph', 'p'],
  ['tableParagraph', 'p'],
  ['blockquote', 'blockquote'],
  ['quote', 'blockquote'],
  ['bulletList', 'ul'],
  ['bullet_list', 'ul'],
  ['orderedList', 'ol'],
  ['ordered_list', 'ol'],
  ['listItem', 'li'],
  ['list_item', 'li'],
  ['codeBlock', 'pre'],
  ['code_block', 'pre'],
  ['horizontalRule', 'hr'],
  ['horizontal_rule', 'hr'],
  ['hr', 'hr'],
  ['divider', 'hr'],
  ['hardBreak', 'br'],
  ['hard_break', 'br'],
  ['hardbreak', 'br'],
  ['table', 'table'],
  ['tableRow', 'tr'],
  ['table_row', 'tr'],
  ['table_header_row', 'tr'],
  ['tableHeader', 'th'],
  ['table_header', 'th'],
  ['tableCell', 'td'],
  ['table_cell', 'td']
])

// Image nodes (Tiptap's, prosemirror-schema-basic's, Milkdown's), and any element with
// no children that has an address (BlockNote's image, video, audio and file blocks keep
// theirs as `url`): drawn as a placeholder naming their alt text (or caption, or file
// name) and address, never loaded (the page's CSP allows no remote image, and a
// document must not make a reader's browser call a URL its writer chose)
const IMAGES = new Set(['image', 'img'])
const ADDRESS_KEYS = ['src', 'url']
const ALT_KEYS = ['alt', 'caption', 'name', 'title']

// a cell's span as a table cell takes it (prosemirror-tables' colspan, rowspan)
const MAX_SPAN = 1000

// Lexical's node types (a paragraph's __type)
const LEXICAL = new Map([['paragraph', 'p'], ['quote', 'blockquote'], ['listitem', 'li'], ['code', 'pre']])
// Lexical's text format bits (a text node's __format)
const LEXICAL_FORMAT = [[1, 'bold'], [2, 'italic'], [4, 'strike'], [8, 'underline'], [16, 'code']]

function tagOfElement (name, attributes, parentTag) {
  if (name === 'heading') return headingTag(attributes.level)
  const tag = BLOCKS.get(name)
  if (tag) return tag
  // by shape: whatever a table holds is a row (Milkdown's table_header_row), and what a
  // row holds a cell, a header cell if its name says so
  if (parentTag === 'table') return 'tr'
  if (parentTag === 'tr') return /header/i.test(name) ? 'th' : 'td'
  return 'div'
}

// ----- list items and nesting, by shape -----
//
// BlockNote keeps no lists: each block is a blockContainer (its id) holding its content
// (a paragraph, a bulletListItem, a numberedListItem, a checkListItem...) and, when it
// has children, a blockGroup of more blockContainers. So, whatever the editor:
// - an element inside another whose children are all of its parent's kind (a
//   container's group of containers) is a nested group: indented;
// - an item element outside a list (a name with "item" and "list", "bullet", "number"
//   or "ordered") gets its marker: a bullet, or its number among the numbered items
//   next to it (BlockNote's `start` on the first of them, else 1);
// - an element with a `checked` attribute that is true or false draws a checkbox
//   (BlockNote's checkListItem, Tiptap's taskItem, Milkdown's task list item).

function isElement (node) {
  return node && node.element !== undefined
}

/** 'number', 'bullet' or null: the marker an item element outside a list takes */
function itemKind (name) {
  if (typeof name !== 'string' || !/item/i.test(name)) return null
  if (/number|ordered/i.test(name)) return 'number'
  if (/bullet|list/i.test(name)) return 'bullet'
  return null
}

function checkedOf (attributes) {
  const checked = attributes && attributes.checked
  return typeof checked === 'boolean' ? checked : null
}

function isNestedGroup (node, parent) {
  if (!isElement(parent) || !isElement(node)) return false
  const kids = node.children || []
  return kids.length > 0 && kids.every((kid) => isElement(kid) && kid.element === parent.element)
}

/** the element a sibling stands for in a run of numbered items: itself, or a
 * container's first child */
function itemOf (node) {
  if (!isElement(node)) return null
  if (itemKind(node.element)) return node
  const first = (node.children || [])[0]
  return isElement(first) && itemKind(first.element) ? first : null
}

/**
 * The number of each numbered item among `nodes` (siblings) and their containers'
 * first children, into `numbers` (a Map from the item's node to its number; an item
 * numbered there already, among its container's siblings, keeps its number).
 */
function numberItems (nodes, numbers = new Map()) {
  let next = null
  for (const node of nodes) {
    const item = itemOf(node)
    if (!item || itemKind(item.element) !== 'number') {
      next = null
      continue
    }
    if (numbers.has(item)) {
      next = numbers.get(item) + 1
      continue
    }
    if (next === null) {
      const start = Number((item.attributes || {}).start)
      next = Number.isInteger(start) && start >= 0 && start < 1e9 ? start : 1
    }
    numbers.set(item, next++)
  }
  return numbers
}

// Slate's element types (an element's `type`, as @slate-yjs/core keeps it: each element
// a Y.XmlText with its properties as attributes; the names of Slate's examples)
const SLATE = new Map([
  ['paragraph', 'p'],
  ['block-quote', 'blockquote'],
  ['blockquote', 'blockquote'],
  ['bulleted-list', 'ul'],
  ['numbered-list', 'ol'],
  ['list-item', 'li'],
  ['code-block', 'pre'],
  ['code', 'pre'],
  ['heading-one', 'h1'],
  ['heading-two', 'h2'],
  ['heading-three', 'h3'],
  ['heading-four', 'h4'],
  ['heading-five', 'h5'],
  ['heading-six', 'h6']
])

/** A block kept as a text: Lexical's (its `__type`) or Slate's (its `type`), or null */
function typeOfText (attributes) {
  if (!attributes) return null
  for (const key of ['__type', 'type']) {
    const type = attributes[key]
    if (typeof type === 'string' && type) return { key, type }
  }
  return null
}

function tagOfText (attributes) {
  const typed = typeOfText(attributes)
  if (!typed) return null // a text inside an element: inline
  const { key, type } = typed
  if (key === 'type') return SLATE.get(type) || 'div'
  if (type === 'heading') return headingTag(String(attributes.__tag || '').slice(1))
  if (type === 'list') return attributes.__listType === 'number' ? 'ol' : 'ul'
  return LEXICAL.get(type) || 'div'
}

function headingTag (level) {
  const n = Number(level)
  return Number.isInteger(n) && n >= 1 && n <= 6 ? `h${n}` : 'h2'
}

/**
 * Draw a model's nodes. `deco` says how each node and run looks beyond its structure:
 * `deco.node(node)` and `deco.run(run)` return h() attributes (class, style, title,
 * dataset) or null, and may wrap: `deco.wrap(run)` returns a tag ('ins', 'del') or null.
 * @returns {DocumentFragment}
 */
export function drawNodes (nodes, deco = {}, depth = 0, parent = null, parentTag = null, numbers = new Map()) {
  const out = document.createDocumentFragment()
  numberItems(nodes, numbers)
  for (const node of nodes) out.append(drawNode(node, deco, depth, { parent, parentTag, numbers }))
  return out
}

/**
 * An XML root drawn live, block by block: a change inside one of its top-level elements
 * (a keystroke in a paragraph) draws that element again, and the others are kept as
 * they were drawn. (Drawn whole, a 2,000-paragraph document showed a keystroke anyone
 * made 20–26 ms after it came, p50, a frame's wait included; block by block, 8–14 ms:
 * bench/page_live_view.py.)
 */
export class LiveTree {
  constructor (fragment) {
    this.fragment = fragment
    this.drawn = new Map() // top-level child -> its element
    this.dirty = new Set()
    fragment.observeDeep((events) => {
      for (const event of events) {
        let type = event.target
        while (type !== fragment && type._item && type._item.parent !== fragment) {
          type = type._item.parent
        }
        if (type !== fragment) this.dirty.add(type)
      }
    })
  }

  /** the root's blocks, in order, as a DocumentFragment */
  draw () {
    const out = document.createDocumentFragment()
    const drawn = new Map()
    // (a top-level numbered item's number depends on its neighbours: it is drawn again
    // when that changes, as when it changes itself)
    const kids = this.fragment.toArray()
    const shapes = kids.map(itemShape)
    const numbers = numberItems(shapes)
    kids.forEach((kid, i) => {
      const number = numbers.get(itemOf(shapes[i]))
      const was = typeof kid === 'object' && !this.dirty.has(kid) && this.drawn.get(kid)
      let el = was && was.number === number ? was.el : null
      if (!el) {
        const node = nodeOf(kid)
        const at = new Map()
        const item = itemOf(node)
        if (item && number !== undefined) at.set(item, number)
        el = drawNode(node, {}, 0, { parent: null, parentTag: null, numbers: at })
      }
      if (typeof kid === 'object') drawn.set(kid, { el, number })
      out.append(el)
    })
    this.drawn = drawn
    this.dirty.clear()
    return out
  }
}

/**
 * What an XML element's and a Y.XmlElement's kid looks like to numberItems: its name
 * and attributes, and its first child's (LiveTree: without building the whole model)
 */
function itemShape (kid) {
  if (!(kid instanceof Y.XmlElement)) return {}
  const first = kid.firstChild
  const children = first instanceof Y.XmlElement
    ? [{ element: first.nodeName, attributes: first.getAttributes(), children: [] }]
    : []
  return { element: kid.nodeName, attributes: kid.getAttributes(), children }
}

function drawNode (node, deco, depth = 0, ctx = {}) {
  if (node.cut || depth > MAX_DEPTH) {
    return h('span', { class: 'x-embed x-cut', title: `nested more than ${MAX_DEPTH} deep: not drawn` }, '…')
  }
  const extra = (deco.node && deco.node(node)) || {}
  if (node.element !== undefined) return drawElement(node, deco, depth, ctx, extra)
  if (node.map !== undefined) return h('span', withClass(extra, 'x-map'))
  const tag = tagOfText(node.attributes)
  const el = h(tag || 'span', withClass(extra, tag ? 'x-node' : 'x-text'))
  if (tag) el.dataset.element = typeOfText(node.attributes).type
  drawRuns(el, node.runs || node.ops || [], deco, depth)
  return el
}

function drawElement (node, deco, depth, ctx, extra) {
  const attributes = node.attributes || {}
  const children = node.children || []
  if (IMAGES.has(node.element) || (!children.length && firstString(attributes, ADDRESS_KEYS))) {
    return drawImage(node.element, attributes, extra)
  }
  const tag = tagOfElement(node.element, attributes, ctx.parentTag)
  const classes = ['x-node']
  const before = []
  const checked = checkedOf(attributes)
  const kind = tag === 'div' ? itemKind(node.element) : null
  if (checked !== null) {
    classes.push('x-item', 'x-task')
    before.push(h('input', {
      type: 'checkbox', class: 'x-check', disabled: true, checked, 'aria-label': checked ? 'done' : 'not done'
    }))
  } else if (kind === 'number') {
    classes.push('x-item')
    before.push(h('span', { class: 'x-marker' }, `${ctx.numbers?.get(node) ?? 1}.`))
  } else if (kind === 'bullet') {
    classes.push('x-item')
    before.push(h('span', { class: 'x-marker' }, '•'))
  }
  if (tag === 'div' && isNestedGroup(node, ctx.parent)) classes.push('x-nested')
  const inner = drawNodes(children, deco, depth + 1, node, tag, ctx.numbers)
  // (the marker and what it marks in a box of their own: a blame's or a diff's bar
  // pads the item itself)
  const el = h(tag, withClass(extra, classes.join(' ')),
    before.length ? h('div', { class: 'x-item-body' }, ...before, inner) : inner)
  el.dataset.element = node.element
  if (tag === 'td' || tag === 'th') spanCell(el, attributes)
  if (tag === 'ol') {
    const start = Number(attributes.start ?? attributes.order)
    if (Number.isInteger(start) && start >= 0 && start < 1e9 && start !== 1) el.start = start
  }
  return el
}

function firstString (attributes, keys) {
  for (const key of keys) {
    const value = attributes[key]
    if (typeof value === 'string' && value) return value
  }
  return ''
}

function drawImage (name, attributes, extra) {
  const src = firstString(attributes, ADDRESS_KEYS)
  const alt = firstString(attributes, ALT_KEYS)
  const el = h('span', withClass(extra, 'x-node x-image'),
    h('span', { class: 'x-image-alt' }, alt || String(name)),
    src ? h('span', { class: 'x-image-src' }, src) : null)
  el.title = src
  el.dataset.element = name
  return el
}

function spanCell (el, attributes) {
  for (const [key, prop] of [['colspan', 'colSpan'], ['rowspan', 'rowSpan']]) {
    const n = Number(attributes[key])
    if (Number.isInteger(n) && n > 1 && n <= MAX_SPAN) el[prop] = n
  }
}

function drawRuns (parent, runs, deco, depth) {
  let format = null // Lexical: the formatting its last text node's map gives
  // Quill formats a line on its newline ({header: 1} on the "\n"): the pieces since the
  // last newline are that line's, drawn as a heading, a list item, a quote
  let line = document.createDocumentFragment()
  const endLine = (attributes) => {
    parent.append(h(lineTag(attributes), { class: lineClass(attributes) }, line))
    line = document.createDocumentFragment()
  }
  for (const run of runs) {
    if (run.node) {
      // a diff or blame names who made or changed the node on its run
      const node = { ...run.node, op: run.node.op ?? run.op, actor: run.node.actor ?? run.actor, seq: run.node.seq ?? run.seq }
      if (node.map !== undefined) format = lexicalFormat(node.map)
      line.append(drawNode(node, deco, depth + 1))
      continue
    }
    const extra = (deco.run && deco.run(run)) || {}
    const tag = (deco.wrap && deco.wrap(run)) || 'span'
    if (run.embed !== undefined) {
      const what = run.embed && typeof run.embed === 'object' ? Object.keys(run.embed)[0] || 'embed' : 'embed'
      line.append(h(tag, extra, h('span', { class: 'x-embed', title: JSON.stringify(run.embed) }, what)))
      continue
    }
    const attributes = { ...(format || {}), ...(run.attributes || {}) }
    const formatsLine = lineTag(run.attributes) !== null
    const parts = String(run.text).split('\n')
    parts.forEach((part, i) => {
      const last = i === parts.length - 1
      const text = last || formatsLine ? part : part + '\n'
      if (text) line.append(h(tag, extra, marked(text, attributes)))
      if (!last && formatsLine) endLine(run.attributes)
    })
  }
  parent.append(line)
}

function lineTag (attributes) {
  if (!attributes) return null
  if (attributes.header) return headingTag(attributes.header)
  if (attributes.list) return 'div'
  if (attributes.blockquote) return 'blockquote'
  if (attributes['code-block']) return 'pre'
  return null
}

function lineClass (attributes) {
  if (!attributes.list) return 'x-line'
  return attributes.list === 'ordered' ? 'x-line x-li x-li-ordered' : 'x-line x-li'
}

function lexicalFormat (map) {
  const bits = Number(map && map.__format) || 0
  const out = {}
  for (const [bit, name] of LEXICAL_FORMAT) if (bits & bit) out[name] = true
  return out
}

// marks by the names editors give them: Tiptap's and BlockNote's (bold, italic, strike,
// code), Milkdown's (strong, emphasis, strike_through, inlineCode), Quill's, Lexical's
const MARKS = [
  [['bold', 'strong'], 'strong'],
  [['italic', 'em', 'emphasis'], 'em'],
  [['underline'], 'u'],
  [['strike', 'strikethrough', 'strikeThrough', 'strike_through'], 's'],
  [['code', 'inlineCode', 'inline_code'], 'code'],
  [['subscript'], 'sub'],
  [['superscript'], 'sup'],
  [['highlight'], 'mark']
]

function marked (text, attributes) {
  let node = visibleText(text)
  for (const [names, tag] of MARKS) {
    if (names.some((n) => attributes[n] && attributes[n] !== false)) node = h(tag, {}, node)
  }
  if (attributes.link) {
    const target = typeof attributes.link === 'string' ? attributes.link : attributes.link.href
    node = h('span', { class: 'x-link', title: String(target ?? '') }, node)
  }
  return node
}

function withClass (attrs, cls) {
  return { ...attrs, class: attrs.class ? `${cls} ${attrs.class}` : cls }
}

/**
 * Every run of a model's nodes, depth first, with the nodes they sit in (for counting
 * what a diff inserted and deleted, and who).
 */
export function * walkRuns (nodes) {
  for (const node of nodes) {
    yield { node }
    if (node.children) yield * walkRuns(node.children)
    for (const run of node.runs || node.ops || []) {
      if (run.node) yield * walkRuns([run.node])
      else yield { run }
    }
  }
}
