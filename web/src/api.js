// The HTTP API of the Palimpsest server (all JSON), at paths relative to the page's
// <base> (where Palimpsest is mounted). Authenticated with
// `Authorization: Bearer TOKEN` when a token is known, else `?user=NAME`
// (the server's open development mode).

export class ApiError extends Error {
  constructor (status, reason) {
    super(reason)
    this.status = status
    this.reason = reason
  }

  get unavailable () {
    return this.status === 404 || this.status === 405 || this.status === 501
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
      const reason = (data && (data.reason || data.error || data.detail)) || `${response.status} ${response.statusText}`
      throw new ApiError(response.status, typeof reason === 'string' ? reason : JSON.stringify(reason))
    }
    return data
  }

  _doc (doc) { return `api/docs/${encodeURIComponent(doc)}` }

  docs () { return this._fetch('GET', 'api/docs') }
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
  restore (doc, seq) { return this._fetch('POST', `${this._doc(doc)}/restore`, { body: { seq } }) }
  tags (doc) { return this._fetch('GET', `${this._doc(doc)}/tags`) }
  addTag (doc, name, seq) { return this._fetch('POST', `${this._doc(doc)}/tags`, { body: { name, seq } }) }
}
