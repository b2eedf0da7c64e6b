// The HTTP API of the Palimpsest server (all JSON), at paths relative to the page's
// <base> (where Palimpsest is mounted). Authenticated with
// `Authorization: Bearer TOKEN` when a token is known, else `?user=NAME`
// (the server's open development mode).

// The server's errors are JSON: {"error": "NotFound", "detail": "no document named 'x'"}
// (`error` the class, `detail` the explanation for people); the undo routes answer
// {"ok": false, "reason": ...}.
export class ApiError extends Error {
  constructor (status, reason, code = null) {
    super(reason)
    this.status = status
    this.reason = reason
    this.code = code // the server's error class ("NotFound", "BadRequest"…), when it said
  }

  /**
   * The route itself is missing (a server without this feature, or something other than
   * Palimpsest answering): not the same as a 404 about this document, its seq or its tag.
   */
  get unavailable () {
    if (this.status === 405 || this.status === 501) return true
    if (this.status !== 404) return false
    return this.code !== 'NotFound' || /^no route\b/.test(this.reason)
  }

  /**
   * the document has no events: only a name (404), or it was deleted and nothing has been
   * written under its name since (410, `deleted`)
   */
  get noDocument () {
    if (this.deleted) return true
    return this.status === 404 && !this.unavailable && /\bno document\b/.test(this.reason)
  }

  /** the document was deleted, and nothing has been written under its name since */
  get deleted () {
    return this.status === 410 && this.code === 'Deleted'
  }
}

export class Api {
  constructor ({ user, token, base = '' }) {
    this.user = user
    this.token = token
    this.base = base
  }

  _url (path, params = {}) {
    const q = new URLSearchParams()
    for (const [k, v] of Object.entries(params)) {
      if (v !== undefined && v !== null && v !== '') q.set(k, String(v))
    }
    if (this.user) q.set('user', this.user)
    const qs = q.toString()
    return `${this.base}${path}${qs ? '?' + qs : ''}`
  }

  async _fetch (method, path, { params, body, bytes = false } = {}) {
    const headers = { Accept: bytes ? 'application/octet-stream' : 'application/json' }
    if (this.token) headers.Authorization = `Bearer ${this.token}`
    if (body !== undefined) headers['Content-Type'] = 'application/json'
    let response
    try {
      response = await fetch(this._url(path, params), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body)
      })
    } catch (err) {
      throw new ApiError(0, 'the server cannot be reached')
    }
    if (bytes && response.ok) return new Uint8Array(await response.arrayBuffer())
    let data = null
    const text = await response.text()
    if (text) {
      try { data = JSON.parse(text) } catch { data = null }
    }
    if (!response.ok) {
      const body = data && typeof data === 'object' ? data : {}
      // the explanation, not the error's class name
      const reason = body.reason || body.detail || body.error || `${response.status} ${response.statusText}`.trim()
      const code = typeof body.error === 'string' ? body.error : null
      throw new ApiError(response.status, typeof reason === 'string' ? reason : JSON.stringify(reason), code)
    }
    return data
  }

  _doc (doc) { return `api/docs/${encodeURIComponent(doc)}` }

  /**
   * One page of the document list, as the server orders and cuts it: `sort` 'name' or
   * 'updated' (newest first), at most `limit`, after `after` (the previous page's
   * `next`), names starting with `prefix`. The answer's `next` is null on the last page.
   */
  docs ({ sort, limit, after, prefix } = {}) {
    return this._fetch('GET', 'api/docs', { params: { sort, limit, after, prefix } })
  }

  events (doc, { after, limit, actor, since, until } = {}) {
    return this._fetch('GET', `${this._doc(doc)}/events`, { params: { after, limit, actor, since, until } })
  }

  sessions (doc, { after, limit, actor } = {}) {
    return this._fetch('GET', `${this._doc(doc)}/sessions`, { params: { after, limit, actor } })
  }
  version (doc, seq) { return this._fetch('GET', `${this._doc(doc)}/versions/${encodeURIComponent(seq)}`) }
  /** the version as a Yjs update (bytes), to draw it with the live document's code */
  versionUpdate (doc, seq) {
    return this._fetch('GET', `${this._doc(doc)}/versions/${encodeURIComponent(seq)}`, { params: { format: 'update' }, bytes: true })
  }

  diff (doc, from, to, join) { return this._fetch('GET', `${this._doc(doc)}/diff`, { params: { from, to, join } }) }
  blame (doc, seq, join) { return this._fetch('GET', `${this._doc(doc)}/blame`, { params: { seq, join } }) }
  /** `dryRun`: write nothing, answer what a restore would take out and put in now */
  restore (doc, seq, { dryRun = false } = {}) {
    return this._fetch('POST', `${this._doc(doc)}/restore`, { body: { seq }, params: { dry_run: dryRun ? 'true' : undefined } })
  }
  tags (doc) { return this._fetch('GET', `${this._doc(doc)}/tags`) }
  /** `move: false`: refused (409) when the name already names another version */
  addTag (doc, name, seq, { move = true } = {}) {
    return this._fetch('POST', `${this._doc(doc)}/tags`, { body: move ? { name, seq } : { name, seq, move } })
  }
}
