// Chat state outside React: rooms, messages per room (by seq, never twice), pending sends,
// typing, presence, and the WebSocket with reconnect, back-off and resume by seq.
import { api, getToken, uuid } from "./api.js";

const PAGE = 50;

function newRoomState() {
  return {
    bySeq: new Map(),      // seq -> Message (the only source of shown messages)
    pending: [],           // [{client_id, body, status: "sending"|"retrying"|"failed", error}]
    loaded: false,         // the newest page has been fetched
    hasOlder: false,
    loadingOlder: false,
    members: new Map(),    // user_id -> display_name
  };
}

export class ChatStore {
  constructor(me, onSessionEnded) {
    this.me = me;
    this.onSessionEnded = onSessionEnded;
    this.rooms = [];               // GET /api/rooms, with unread
    this.roomState = new Map();    // room_id -> newRoomState()
    this.activeRoom = null;
    this.typing = new Map();       // room_id -> Map(user_id -> expires ms)
    this.presence = new Map();     // user_id -> "online"|"offline"
    this.names = new Map([[me.id, me.display_name]]);
    this.conn = { state: "connecting", retryIn: 0, attempt: 0 };
    this.listeners = new Set();
    this.version = 0;
    this.ws = null;
    this.stopped = false;
    this.reconnectTimer = null;
    this.heartbeat = null;
    this.lastFrameAt = 0;
    this.lastTypingSent = 0;
    this.typingTimer = setInterval(() => this.expireTyping(), 1000);
    this.onOnline = () => { if (this.conn.state !== "connected") this.reconnectNow(); };
    window.addEventListener("online", this.onOnline);
  }

  // --- subscription ----------------------------------------------------------------------
  subscribe = (fn) => { this.listeners.add(fn); return () => this.listeners.delete(fn); };
  getVersion = () => this.version;
  emit() { this.version++; for (const fn of this.listeners) fn(); }

  room(id) {
    let s = this.roomState.get(id);
    if (!s) { s = newRoomState(); this.roomState.set(id, s); }
    return s;
  }
  lastSeq(id) {
    const s = this.roomState.get(id);
    if (!s || !s.bySeq.size) return 0;
    let max = 0;
    for (const k of s.bySeq.keys()) if (k > max) max = k;
    return max;
  }
  messages(id) {
    const s = this.room(id);
    return Array.from(s.bySeq.values()).sort((a, b) => a.seq - b.seq);
  }
  nameOf(userId) { return this.names.get(userId) || "Someone"; }

  // --- lifecycle -------------------------------------------------------------------------
  start() {
    this.refreshRooms();
    this.connect();
  }
  stop() {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    clearInterval(this.heartbeat);
    clearInterval(this.typingTimer);
    window.removeEventListener("online", this.onOnline);
    if (this.ws) { try { this.ws.close(1000); } catch (_) { /* closed */ } }
    this.ws = null;
  }

  async refreshRooms() {
    try {
      const data = await api("GET", "/api/rooms");
      this.rooms = data.rooms.map((r) => (r.id === this.activeRoom ? { ...r, unread: 0 } : r));
      this.emit();
      return this.rooms;
    } catch (e) {
      return null;
    }
  }
  upsertRoom(room) {
    const i = this.rooms.findIndex((r) => r.id === room.id);
    const merged = { unread: 0, last_read_seq: room.last_seq, ...(i >= 0 ? this.rooms[i] : {}), ...room };
    if (i >= 0) this.rooms[i] = merged; else this.rooms = [...this.rooms, merged];
    this.rooms = [...this.rooms];
    this.emit();
  }

  // --- messages --------------------------------------------------------------------------
  addMessages(roomId, list) {
    const s = this.room(roomId);
    let changed = false;
    for (const m of list) {
      const old = s.bySeq.get(m.seq);
      // Keep the newest version: an edit or delete may arrive before an older copy.
      if (!old || (m.deleted && !old.deleted) || ((m.edited_at || "") > (old.edited_at || "") && !old.deleted)) {
        s.bySeq.set(m.seq, m);
        changed = true;
      }
      if (m.client_id) {
        const before = s.pending.length;
        s.pending = s.pending.filter((p) => p.client_id !== m.client_id);
        if (s.pending.length !== before) changed = true;
      }
      if (m.author_id && !this.names.has(m.author_id) && s.members.has(m.author_id)) {
        this.names.set(m.author_id, s.members.get(m.author_id));
      }
    }
    if (changed) this.emit();
    return changed;
  }

  async openRoom(roomId) {
    this.activeRoom = roomId;
    const s = this.room(roomId);
    this.rooms = this.rooms.map((r) => (r.id === roomId ? { ...r, unread: 0 } : r));
    this.emit();
    this.loadMembers(roomId);
    if (!s.loaded) {
      const data = await api("GET", `/api/rooms/${roomId}/messages`, undefined, { query: { limit: PAGE } });
      s.hasOlder = data.has_more;
      s.loaded = true;
      this.addMessages(roomId, data.messages);
      this.emit();
    }
    // Live events of a room are merged only once its first page is held: whatever was
    // written while that page was in flight (or while this room was not loaded) comes now.
    await this.catchUp(roomId);
    this.markRead(roomId);
  }
  closeRoom() { this.activeRoom = null; this.emit(); }

  async loadMembers(roomId) {
    try {
      const data = await api("GET", `/api/rooms/${roomId}/members`);
      const s = this.room(roomId);
      s.members = new Map(data.members.map((m) => [m.user_id, m.display_name]));
      for (const m of data.members) {
        this.names.set(m.user_id, m.display_name);
        // The server's snapshot; `presence` events keep it current from here on.
        if (typeof m.online === "boolean" && m.user_id !== this.me.id) this.presence.set(m.user_id, m.online ? "online" : "offline");
      }
      this.emit();
    } catch (_) { /* shown without names */ }
  }

  async loadOlder(roomId) {
    const s = this.room(roomId);
    if (!s.hasOlder || s.loadingOlder) return;
    const msgs = this.messages(roomId);
    if (!msgs.length) return;
    s.loadingOlder = true;
    this.emit();
    try {
      const data = await api("GET", `/api/rooms/${roomId}/messages`, undefined,
        { query: { before_seq: msgs[0].seq, limit: PAGE } });
      s.hasOlder = data.has_more;
      this.addMessages(roomId, data.messages);
    } finally {
      s.loadingOlder = false;
      this.emit();
    }
  }

  // Fetches everything after the last seq held (resume, or a gap in live events).
  async catchUp(roomId) {
    const s = this.room(roomId);
    if (!s.loaded) return;
    if (s.catchingUp) { s.catchUpAgain = true; return; }
    s.catchingUp = true;
    try {
      do {
        s.catchUpAgain = false;
        for (let i = 0; i < 100; i++) {
          const data = await api("GET", `/api/rooms/${roomId}/messages`, undefined,
            { query: { after_seq: this.lastSeq(roomId), limit: 100 } });
          this.addMessages(roomId, data.messages);
          if (!data.has_more || !data.messages.length) break;
        }
      } while (s.catchUpAgain);
    } catch (_) {
      // Retried on the next event, reconnect or room switch.
    } finally {
      s.catchingUp = false;
    }
    if (roomId === this.activeRoom) this.markRead(roomId);
  }

  async markRead(roomId) {
    const seq = this.lastSeq(roomId);
    const s = this.room(roomId);
    if (!seq || s.readSent >= seq || document.hidden) return;
    s.readSent = seq;
    try { await api("POST", `/api/rooms/${roomId}/read`, { seq }); } catch (_) { s.readSent = 0; }
  }

  send(roomId, body) {
    this.lastTypingSent = 0; // the next keystroke announces typing again
    const p = { client_id: uuid(), body, status: "sending", error: null, attempts: 0 };
    this.room(roomId).pending.push(p);
    this.emit();
    this.trySend(roomId, p);
  }
  retry(roomId, clientId) {
    const p = this.room(roomId).pending.find((x) => x.client_id === clientId);
    if (!p) return;
    p.status = "sending"; p.error = null; p.attempts = 0;
    this.emit();
    this.trySend(roomId, p);
  }
  discard(roomId, clientId) {
    const s = this.room(roomId);
    s.pending = s.pending.filter((x) => x.client_id !== clientId);
    this.emit();
  }
  async trySend(roomId, p) {
    if (this.stopped) return;
    p.attempts++;
    try {
      const m = await api("POST", `/api/rooms/${roomId}/messages`, { body: p.body, client_id: p.client_id });
      const s = this.room(roomId);
      const held = this.lastSeq(roomId);
      this.addMessages(roomId, [m]);
      s.pending = s.pending.filter((x) => x.client_id !== p.client_id);
      this.emit();
      // Our own message jumping ahead means others wrote in between: fetch them.
      if (s.loaded && m.seq > held + 1) this.catchUp(roomId);
      if (roomId === this.activeRoom) this.markRead(roomId);
    } catch (e) {
      if (e.transient && p.attempts < 8) {
        // The same client_id makes the retry safe: the server never stores it twice.
        p.status = "retrying";
        p.error = e.message;
        this.emit();
        const delay = Math.max((e.retryAfter || 0) * 1000, Math.min(1000 * 2 ** (p.attempts - 1), 15000));
        setTimeout(() => this.trySend(roomId, p), delay);
      } else {
        p.status = "failed";
        p.error = e.message;
        this.emit();
      }
    }
  }

  async edit(roomId, messageId, body) {
    const m = await api("PATCH", `/api/rooms/${roomId}/messages/${messageId}`, { body });
    this.addMessages(roomId, [m]);
  }
  async remove(roomId, messageId) {
    await api("DELETE", `/api/rooms/${roomId}/messages/${messageId}`);
    const s = this.room(roomId);
    for (const [seq, m] of s.bySeq) {
      if (m.id === messageId) s.bySeq.set(seq, { ...m, deleted: true, body: "" });
    }
    this.emit();
  }

  // --- typing and presence ---------------------------------------------------------------
  typingIn(roomId) {
    const now = Date.now();
    if (now - this.lastTypingSent < 2500 && this.lastTypingRoom === roomId) return;
    this.lastTypingSent = now;
    this.lastTypingRoom = roomId;
    this.sendFrame({ type: "typing", room_id: roomId });
  }
  typers(roomId) {
    const m = this.typing.get(roomId);
    if (!m) return [];
    const now = Date.now();
    return Array.from(m.entries()).filter(([, exp]) => exp > now).map(([u]) => u);
  }
  expireTyping() {
    const now = Date.now();
    let changed = false;
    for (const m of this.typing.values()) {
      for (const [u, exp] of m) if (exp <= now) { m.delete(u); changed = true; }
    }
    if (changed) this.emit();
  }

  // --- WebSocket -------------------------------------------------------------------------
  setConn(state, extra = {}) { this.conn = { ...this.conn, state, ...extra }; this.emit(); }

  sendFrame(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.conn.state === "connected") {
      try { this.ws.send(JSON.stringify(frame)); } catch (_) { /* reconnecting */ }
    }
  }

  connect() {
    if (this.stopped) return;
    clearTimeout(this.reconnectTimer);
    const token = getToken();
    if (!token) { this.onSessionEnded(); return; }
    this.setConn(this.conn.attempt ? "reconnecting" : "connecting", { retryIn: 0 });
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    let ws;
    try { ws = new WebSocket(`${proto}//${location.host}/ws`); } catch (_) { this.scheduleReconnect(); return; }
    this.ws = ws;
    ws.onopen = () => { ws.send(JSON.stringify({ type: "auth", token })); };
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      this.lastFrameAt = Date.now();
      let f;
      try { f = JSON.parse(ev.data); } catch (_) { return; }
      this.onFrame(f);
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.ws = null;
      clearInterval(this.heartbeat);
      if (this.stopped) return;
      if (ev.code === 4401) { this.setConn("signed_out"); this.onSessionEnded(); return; }
      // While disconnected nobody's presence is known; typing stops with the socket too.
      this.presence.clear();
      this.typing.clear();
      this.scheduleReconnect();
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  scheduleReconnect() {
    if (this.stopped) return;
    const attempt = this.conn.attempt + 1;
    // 0.5 s, 1 s, 2 s, 4 s ... capped at 10 s, with jitter so clients do not stampede.
    const base = Math.min(500 * 2 ** (attempt - 1), 10000);
    const delay = Math.round(base / 2 + Math.random() * base / 2);
    this.setConn("offline", { attempt, retryIn: Math.ceil(delay / 1000) });
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }
  reconnectNow() {
    clearTimeout(this.reconnectTimer);
    if (this.ws) { const w = this.ws; this.ws = null; try { w.close(); } catch (_) { /* gone */ } }
    this.connect();
  }

  onFrame(f) {
    switch (f.type) {
      case "ready":
        this.setConn("connected", { attempt: 0, retryIn: 0 });
        this.presence.set(this.me.id, "online");
        this.lastFrameAt = Date.now();
        clearInterval(this.heartbeat);
        this.heartbeat = setInterval(() => {
          if (Date.now() - this.lastFrameAt > 65000 && this.ws) { this.reconnectNow(); return; }
          this.sendFrame({ type: "ping" });
        }, 25000);
        this.resume(f.rooms || []);
        break;
      case "message.created": {
        const m = f.message;
        const s = this.room(f.room_id);
        const held = this.lastSeq(f.room_id);
        if (s.loaded) {
          this.addMessages(f.room_id, [m]);
          if (m.seq > held + 1) this.catchUp(f.room_id);
          if (f.room_id === this.activeRoom) this.markRead(f.room_id);
        }
        this.typing.get(f.room_id)?.delete(m.author_id);
        if (m.author_id !== this.me.id) this.presence.set(m.author_id, "online");
        const known = this.rooms.find((r) => r.id === f.room_id);
        if (!known) { this.refreshRooms(); break; }
        this.rooms = this.rooms.map((r) => (r.id !== f.room_id ? r : {
          ...r, last_seq: Math.max(r.last_seq, m.seq),
          unread: f.room_id === this.activeRoom || m.author_id === this.me.id || m.seq <= r.last_seq ? r.unread : r.unread + 1,
        }));
        this.emit();
        break;
      }
      case "message.updated":
        if (this.room(f.room_id).loaded) this.addMessages(f.room_id, [f.message]);
        break;
      case "message.deleted": {
        const s = this.room(f.room_id);
        const old = s.bySeq.get(f.seq);
        if (old) { s.bySeq.set(f.seq, { ...old, deleted: true, body: "" }); this.emit(); }
        break;
      }
      case "typing": {
        if (f.user_id === this.me.id) break;
        let m = this.typing.get(f.room_id);
        if (!m) { m = new Map(); this.typing.set(f.room_id, m); }
        m.set(f.user_id, Date.now() + 5000);
        this.presence.set(f.user_id, "online");
        this.emit();
        break;
      }
      case "presence":
        this.presence.set(f.user_id, f.status);
        this.emit();
        break;
      case "member.joined":
      case "member.left":
        if (f.user_id === this.me.id) this.refreshRooms();
        if (f.room_id === this.activeRoom) this.loadMembers(f.room_id);
        this.rooms = this.rooms.map((r) => (r.id !== f.room_id ? r : {
          ...r, member_count: Math.max(0, r.member_count + (f.type === "member.joined" ? 1 : -1)),
        }));
        this.emit();
        break;
      case "room.read":
        this.rooms = this.rooms.map((r) => (r.id === f.room_id && f.seq >= r.last_seq ? { ...r, unread: 0 } : r));
        this.emit();
        break;
      case "session.revoked":
        this.stopped = true;
        this.setConn("signed_out");
        this.onSessionEnded();
        break;
      default:
        break;
    }
  }

  // After (re)connecting: every loaded room whose last_seq moved past what we hold fetches
  // the difference; the room list (and its unread counts) is refreshed.
  resume(readyRooms) {
    for (const r of readyRooms) {
      if (r.last_seq > this.lastSeq(r.room_id) && this.room(r.room_id).loaded) this.catchUp(r.room_id);
    }
    this.refreshRooms();
  }
}
