import React, { useEffect, useLayoutEffect, useRef, useState, useSyncExternalStore } from "react";
import { createRoot } from "react-dom/client";
import { api, getToken, setToken, setUnauthorizedHandler } from "./api.js";
import { ChatStore } from "./store.js";

// --- routing -------------------------------------------------------------------------------
let routeListeners = new Set();
function navigate(path, replace = false) {
  if (replace) history.replaceState(null, "", path); else history.pushState(null, "", path);
  routeListeners.forEach((fn) => fn());
}
window.addEventListener("popstate", () => routeListeners.forEach((fn) => fn()));
function useRoute() {
  const [, set] = useState(0);
  useEffect(() => { const fn = () => set((x) => x + 1); routeListeners.add(fn); return () => routeListeners.delete(fn); }, []);
  return { path: location.pathname, query: new URLSearchParams(location.search) };
}
function Link({ to, children, ...rest }) {
  return <a href={to} onClick={(e) => { if (e.button === 0 && !e.metaKey && !e.ctrlKey) { e.preventDefault(); navigate(to); } }} {...rest}>{children}</a>;
}

// --- small pieces --------------------------------------------------------------------------
function ErrorText({ error }) {
  if (!error) return null;
  return <p className="error" role="alert" data-testid="error">{typeof error === "string" ? error : error.message}</p>;
}
function Notice({ children }) {
  return <p className="notice" role="status" data-testid="notice">{children}</p>;
}
function Field({ label, id, ...input }) {
  return (
    <div className="field">
      <label htmlFor={id}>{label}</label>
      <input id={id} name={id} {...input} />
    </div>
  );
}
function AuthFrame({ title, children }) {
  useEffect(() => { document.title = `${title} · swiftchat`; }, [title]);
  return (
    <main className="auth">
      <div className="auth-card">
        <p className="brand">swiftchat</p>
        <h1>{title}</h1>
        {children}
      </div>
    </main>
  );
}
function useBusy() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const run = async (fn) => {
    setBusy(true); setError(null);
    try { return await fn(); } catch (e) { setError(e); return undefined; } finally { setBusy(false); }
  };
  return { busy, error, setError, run };
}

// --- auth screens --------------------------------------------------------------------------
const PROVIDER_NAMES = { google: "Google", github: "GitHub", yandex: "Yandex" };

function OAuthButtons() {
  const [providers, setProviders] = useState([]);
  const { busy, error, run } = useBusy();
  useEffect(() => { api("GET", "/api/auth/providers", undefined, { auth: false }).then((d) => setProviders(d.providers || []), () => {}); }, []);
  if (!providers.length) return null;
  const go = (p) => run(async () => {
    const d = await api("GET", `/api/auth/${p}`, undefined, { auth: false });
    window.location.assign(d.url);
  });
  return (
    <div className="oauth" aria-label="Sign in with another account">
      <p className="muted">or continue with</p>
      {providers.map((p) => (
        <button key={p} type="button" className="secondary" disabled={busy} onClick={() => go(p)} data-testid={`oauth-${p}`}>
          {PROVIDER_NAMES[p] || p}
        </button>
      ))}
      <ErrorText error={error} />
    </div>
  );
}

function Login({ onLogin, flash }) {
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [resent, setResent] = useState(false);
  const { busy, error, run } = useBusy();
  const submit = (e) => {
    e.preventDefault();
    run(async () => {
      const d = await api("POST", "/api/auth/login", { email, password }, { auth: false });
      onLogin(d);
    });
  };
  const resend = () => run(async () => { await api("POST", "/api/auth/resend-verification", { email }, { auth: false }); setResent(true); });
  return (
    <AuthFrame title="Log in">
      {flash && <p className="flash" role="status" data-testid="flash">{flash}</p>}
      <form onSubmit={submit} data-testid="login-form">
        <Field label="Email" id="login-email" type="email" autoComplete="username" required value={email} onChange={(e) => setEmail(e.target.value)} autoFocus />
        <Field label="Password" id="login-password" type="password" autoComplete="current-password" required value={password} onChange={(e) => setPassword(e.target.value)} />
        <ErrorText error={error} />
        {error && error.code === "email_not_verified" && !resent && (
          <button type="button" className="link" onClick={resend}>Send the confirmation email again</button>
        )}
        {resent && <Notice>If the account exists, a new confirmation email is on its way.</Notice>}
        <button type="submit" disabled={busy} data-testid="login-submit">{busy ? "Logging in…" : "Log in"}</button>
      </form>
      <OAuthButtons />
      <p className="links">
        <Link to="/register" data-testid="to-register">Create an account</Link>
        <Link to="/forgot-password">Forgot your password?</Link>
      </p>
    </AuthFrame>
  );
}

function Register() {
  const [email, setEmail] = useState("");
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [done, setDone] = useState(false);
  const { busy, error, run } = useBusy();
  const submit = (e) => {
    e.preventDefault();
    run(async () => {
      await api("POST", "/api/auth/register", { email, password, display_name: name.trim() || undefined }, { auth: false });
      setDone(true);
    });
  };
  if (done) {
    return (
      <AuthFrame title="Check your email">
        <Notice>We sent a confirmation link to <strong>{email}</strong>. Open it to finish creating your account.</Notice>
        <p className="links"><Link to="/login">Back to log in</Link></p>
      </AuthFrame>
    );
  }
  return (
    <AuthFrame title="Create an account">
      <form onSubmit={submit} data-testid="register-form">
        <Field label="Email" id="register-email" type="email" autoComplete="email" required value={email} onChange={(e) => setEmail(e.target.value)} autoFocus />
        <Field label="Display name" id="register-name" type="text" autoComplete="nickname" maxLength={64} value={name} onChange={(e) => setName(e.target.value)} />
        <Field label="Password (at least 8 characters)" id="register-password" type="password" autoComplete="new-password" minLength={8} required value={password} onChange={(e) => setPassword(e.target.value)} />
        <ErrorText error={error} />
        <button type="submit" disabled={busy} data-testid="register-submit">{busy ? "Creating…" : "Create account"}</button>
      </form>
      <OAuthButtons />
      <p className="links"><Link to="/login">I already have an account</Link></p>
    </AuthFrame>
  );
}

// Shared by the verification link and the OAuth callback: one request that logs in.
function TokenLanding({ title, request, onLogin }) {
  const [error, setError] = useState(null);
  const started = useRef(false);
  useEffect(() => {
    if (started.current) return;
    started.current = true;
    request().then((d) => onLogin(d), (e) => setError(e));
  }, []);
  return (
    <AuthFrame title={title}>
      {error ? <><ErrorText error={error} /><p className="links"><Link to="/login">Go to log in</Link></p></>
        : <Notice>One moment…</Notice>}
    </AuthFrame>
  );
}

function VerifyEmail({ query, onLogin }) {
  const token = query.get("token") || "";
  return <TokenLanding title="Confirming your email" onLogin={onLogin}
    request={() => api("GET", "/api/auth/verify-email", undefined, { auth: false, query: { token } })} />;
}

function OAuthCallback({ provider, query, onLogin }) {
  return <TokenLanding title={`Signing in with ${PROVIDER_NAMES[provider] || provider}`} onLogin={onLogin}
    request={() => {
      if (query.get("error")) return Promise.reject(new Error("The sign-in was cancelled or refused."));
      return api("GET", `/api/auth/${encodeURIComponent(provider)}/callback`, undefined,
        { auth: false, query: { code: query.get("code") || "", state: query.get("state") || "" } });
    }} />;
}

function ForgotPassword() {
  const [email, setEmail] = useState("");
  const [done, setDone] = useState(false);
  const { busy, error, run } = useBusy();
  const submit = (e) => { e.preventDefault(); run(async () => { await api("POST", "/api/auth/password-reset", { email }, { auth: false }); setDone(true); }); };
  return (
    <AuthFrame title="Reset your password">
      {done ? <Notice>If an account exists for {email}, we sent it a link to choose a new password.</Notice> : (
        <form onSubmit={submit}>
          <Field label="Email" id="forgot-email" type="email" autoComplete="email" required value={email} onChange={(e) => setEmail(e.target.value)} autoFocus />
          <ErrorText error={error} />
          <button type="submit" disabled={busy}>Send reset link</button>
        </form>
      )}
      <p className="links"><Link to="/login">Back to log in</Link></p>
    </AuthFrame>
  );
}

function ResetPassword({ query }) {
  const [password, setPassword] = useState("");
  const [again, setAgain] = useState("");
  const [done, setDone] = useState(false);
  const { busy, error, setError, run } = useBusy();
  const submit = (e) => {
    e.preventDefault();
    if (password !== again) { setError("The two passwords are different."); return; }
    run(async () => { await api("POST", "/api/auth/password-reset/confirm", { token: query.get("token") || "", password }, { auth: false }); setDone(true); });
  };
  return (
    <AuthFrame title="Choose a new password">
      {done ? <Notice>Your password is changed and every session was logged out. You can log in now.</Notice> : (
        <form onSubmit={submit}>
          <Field label="New password (at least 8 characters)" id="reset-password" type="password" autoComplete="new-password" minLength={8} required value={password} onChange={(e) => setPassword(e.target.value)} autoFocus />
          <Field label="New password again" id="reset-password-again" type="password" autoComplete="new-password" required value={again} onChange={(e) => setAgain(e.target.value)} />
          <ErrorText error={error} />
          <button type="submit" disabled={busy}>Change password</button>
        </form>
      )}
      <p className="links"><Link to="/login">Go to log in</Link></p>
    </AuthFrame>
  );
}

// --- signed-in screens ---------------------------------------------------------------------
function useStore(store) {
  useSyncExternalStore(store.subscribe, store.getVersion);
  return store;
}

const CONN_TEXT = {
  connecting: "Connecting…",
  reconnecting: "Reconnecting…",
  connected: "Connected",
  offline: "Offline",
  signed_out: "Signed out",
};
function ConnState({ store }) {
  const { state, retryIn } = store.conn;
  const text = state === "offline" ? `Offline, retrying${retryIn ? ` in ${retryIn}s` : "…"}` : CONN_TEXT[state];
  return (
    <span className={`conn conn-${state}`} role="status" aria-live="polite" data-testid="conn-state" data-state={state}>
      <span className="dot" aria-hidden="true" />{text}
      {state === "offline" && <button type="button" className="link" onClick={() => store.reconnectNow()}>Retry now</button>}
    </span>
  );
}

function Sessions({ onBack }) {
  const [sessions, setSessions] = useState(null);
  const { busy, error, run } = useBusy();
  const load = () => run(async () => { const d = await api("GET", "/api/auth/sessions"); setSessions(d.sessions); });
  useEffect(() => { load(); }, []);
  const end = (id) => run(async () => { await api("DELETE", `/api/auth/sessions/${id}`); const d = await api("GET", "/api/auth/sessions"); setSessions(d.sessions); });
  const endOthers = () => run(async () => {
    for (const s of sessions.filter((x) => !x.current)) await api("DELETE", `/api/auth/sessions/${s.id}`).catch((e) => { if (e.status !== 404) throw e; });
    const d = await api("GET", "/api/auth/sessions"); setSessions(d.sessions);
  });
  return (
    <section className="panel sessions" aria-labelledby="sessions-title">
      <div className="panel-head">
        <button type="button" className="secondary" onClick={onBack}>← Back</button>
        <h2 id="sessions-title">Your sessions</h2>
      </div>
      <ErrorText error={error} />
      {sessions && (
        <>
          <ul className="session-list" data-testid="session-list">
            {sessions.map((s) => (
              <li key={s.id} data-testid="session">
                <div>
                  <strong>{s.current ? "This browser" : "Other session"}</strong>
                  <span className="muted"> · {s.user_agent || "unknown device"}</span>
                  <div className="muted small">Signed in {new Date(s.created_at).toLocaleString()} · last seen {new Date(s.last_seen_at).toLocaleString()}</div>
                </div>
                {!s.current && <button type="button" className="secondary" disabled={busy} onClick={() => end(s.id)}>Log out</button>}
              </li>
            ))}
          </ul>
          <button type="button" disabled={busy || sessions.every((s) => s.current)} onClick={endOthers} data-testid="logout-others">Log out other sessions</button>
        </>
      )}
    </section>
  );
}

function CreateRoom({ store, onCreated }) {
  const [name, setName] = useState("");
  const [kind, setKind] = useState("public");
  const { busy, error, run } = useBusy();
  const submit = (e) => {
    e.preventDefault();
    run(async () => {
      const room = await api("POST", "/api/rooms", { name, kind });
      store.upsertRoom(room);
      setName("");
      onCreated(room.id);
    });
  };
  return (
    <form className="mini-form" onSubmit={submit} aria-label="Create a room" data-testid="create-room-form">
      <Field label="New room name" id="new-room-name" type="text" maxLength={100} required value={name} onChange={(e) => setName(e.target.value)} />
      <div className="row">
        <label htmlFor="new-room-kind" className="sr-only">Visibility</label>
        <select id="new-room-kind" value={kind} onChange={(e) => setKind(e.target.value)}>
          <option value="public">Public</option>
          <option value="private">Private</option>
        </select>
        <button type="submit" disabled={busy} data-testid="create-room-submit">Create</button>
      </div>
      <ErrorText error={error} />
    </form>
  );
}

function Directory({ store, onJoined }) {
  const [q, setQ] = useState("");
  const [rooms, setRooms] = useState(null);
  const { busy, error, run } = useBusy();
  const search = (e) => {
    if (e) e.preventDefault();
    run(async () => { const d = await api("GET", "/api/rooms/public", undefined, { query: { q: q.trim() || undefined, limit: 50 } }); setRooms(d.rooms); });
  };
  useEffect(() => { search(); }, []);
  const mine = new Set(store.rooms.map((r) => r.id));
  const join = (id) => run(async () => { const room = await api("POST", `/api/rooms/${id}/join`); store.upsertRoom(room); await store.refreshRooms(); onJoined(room.id); });
  return (
    <div className="directory" data-testid="directory">
      <form className="row" onSubmit={search} role="search">
        <label htmlFor="directory-q" className="sr-only">Search public rooms</label>
        <input id="directory-q" type="search" placeholder="Search public rooms" value={q} onChange={(e) => setQ(e.target.value)} />
        <button type="submit" className="secondary" disabled={busy}>Search</button>
      </form>
      <ErrorText error={error} />
      {rooms && !rooms.length && <p className="muted">No public rooms found.</p>}
      <ul className="room-list">
        {rooms && rooms.map((r) => (
          <li key={r.id} className="dir-room" data-testid="directory-room" data-room-name={r.name}>
            <span className="room-name">{r.name}</span>
            <span className="muted small">{r.member_count} member{r.member_count === 1 ? "" : "s"}</span>
            {mine.has(r.id)
              ? <button type="button" className="secondary" onClick={() => onJoined(r.id)}>Open</button>
              : <button type="button" disabled={busy} onClick={() => join(r.id)} aria-label={`Join ${r.name}`} data-testid="join-room">Join</button>}
          </li>
        ))}
      </ul>
    </div>
  );
}

function DirectMessage({ store, onOpened }) {
  const [q, setQ] = useState("");
  const [users, setUsers] = useState([]);
  const { error, setError, run } = useBusy();
  useEffect(() => {
    const term = q.trim();
    if (term.length < 2) { setUsers([]); setError(null); return undefined; }
    const t = setTimeout(() => run(async () => { const d = await api("GET", "/api/users", undefined, { query: { q: term } }); setUsers(d.users.filter((u) => u.id !== store.me.id)); }), 250);
    return () => clearTimeout(t);
  }, [q]);
  const open = (u) => run(async () => {
    const room = await api("POST", "/api/direct", { user_id: u.id });
    store.names.set(u.id, u.display_name);
    store.upsertRoom({ ...room, dm_name: u.display_name });
    await store.refreshRooms();
    setQ("");
    onOpened(room.id);
  });
  return (
    <div className="dm-search">
      <label htmlFor="dm-q">Message a person</label>
      <input id="dm-q" type="search" placeholder="Name or email (2+ letters)" value={q} onChange={(e) => setQ(e.target.value)} data-testid="dm-search" />
      <ErrorText error={error} />
      <ul className="room-list">
        {users.map((u) => (
          <li key={u.id}><button type="button" className="room-button" onClick={() => open(u)}>{u.display_name}</button></li>
        ))}
        {q.trim().length >= 2 && !users.length && <li className="muted small">Nobody found.</li>}
      </ul>
    </div>
  );
}

function roomTitle(store, room) {
  if (!room) return "";
  if (room.kind !== "direct") return room.name;
  if (room.dm_name) return room.dm_name;
  const s = store.roomState.get(room.id);
  if (s) for (const [id, n] of s.members) if (id !== store.me.id) return n;
  return room.name || "Direct message";
}

function Sidebar({ store, tab, setTab, openRoom }) {
  return (
    <nav className="sidebar" aria-label="Rooms">
      <div className="tabs" role="tablist">
        {[["rooms", "My rooms"], ["directory", "Browse"], ["new", "New"]].map(([id, label]) => (
          <button key={id} type="button" role="tab" aria-selected={tab === id} className={tab === id ? "tab active" : "tab"} onClick={() => setTab(id)} data-testid={`tab-${id}`}>{label}</button>
        ))}
      </div>
      {tab === "rooms" && (
        <ul className="room-list" data-testid="room-list">
          {!store.rooms.length && <li className="muted small">You are in no room yet: browse the public rooms or create one.</li>}
          {store.rooms.map((r) => (
            <li key={r.id}>
              <button type="button" className={r.id === store.activeRoom ? "room-button active" : "room-button"} aria-current={r.id === store.activeRoom ? "true" : undefined}
                onClick={() => openRoom(r.id)} data-testid="room-item" data-room-name={r.name} data-room-id={r.id}>
                <span className="room-name">{r.kind === "direct" ? "@ " : r.kind === "private" ? "🔒 " : "# "}{roomTitle(store, r)}</span>
                {r.unread > 0 && <span className="badge" data-testid="unread" aria-label={`${r.unread} unread`}>{r.unread > 99 ? "99+" : r.unread}</span>}
              </button>
            </li>
          ))}
        </ul>
      )}
      {tab === "directory" && <Directory store={store} onJoined={(id) => { setTab("rooms"); openRoom(id); }} />}
      {tab === "new" && (
        <div className="new">
          <CreateRoom store={store} onCreated={(id) => { setTab("rooms"); openRoom(id); }} />
          <DirectMessage store={store} onOpened={(id) => { setTab("rooms"); openRoom(id); }} />
        </div>
      )}
    </nav>
  );
}

function MessageItem({ store, roomId, m }) {
  const mine = m.author_id === store.me.id;
  const [editing, setEditing] = useState(false);
  const [text, setText] = useState(m.body);
  const { busy, error, run } = useBusy();
  const save = () => run(async () => { await store.edit(roomId, m.id, text); setEditing(false); });
  const presence = store.presence.get(m.author_id) === "online" ? "online" : "offline";
  return (
    <li className={`msg${mine ? " mine" : ""}${m.deleted ? " deleted" : ""}`} data-testid="message" data-seq={m.seq} data-id={m.id}>
      <div className="meta">
        <span className={`presence ${presence}`} aria-label={presence} title={presence} />
        <span className="author">{mine ? "You" : store.nameOf(m.author_id)}</span>
        <time dateTime={m.created_at}>{new Date(m.created_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}</time>
        {m.edited_at && !m.deleted && <span className="muted small">(edited)</span>}
      </div>
      {m.deleted ? <p className="body muted">This message was deleted.</p>
        : editing ? (
          <div className="edit">
            <label htmlFor={`edit-${m.id}`} className="sr-only">Edit message</label>
            <textarea id={`edit-${m.id}`} value={text} onChange={(e) => setText(e.target.value)} autoFocus
              onKeyDown={(e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); save(); } if (e.key === "Escape") setEditing(false); }} />
            <button type="button" disabled={busy} onClick={save}>Save</button>
            <button type="button" className="secondary" onClick={() => setEditing(false)}>Cancel</button>
            <ErrorText error={error} />
          </div>
        ) : <p className="body" data-testid="message-body">{m.body}</p>}
      {mine && !m.deleted && !editing && (
        <div className="actions">
          <button type="button" className="link" onClick={() => { setText(m.body); setEditing(true); }} aria-label="Edit your message">Edit</button>
          <button type="button" className="link" disabled={busy} onClick={() => { if (window.confirm("Delete this message?")) run(() => store.remove(roomId, m.id)); }} aria-label="Delete your message">Delete</button>
          <ErrorText error={error} />
        </div>
      )}
    </li>
  );
}

function ChatView({ store, roomId, onBack }) {
  const room = store.rooms.find((r) => r.id === roomId);
  const s = store.room(roomId);
  const messages = store.messages(roomId);
  const listRef = useRef(null);
  const stick = useRef(true);
  const prevHeight = useRef(0);
  const prevFirst = useRef(null);
  const [text, setText] = useState("");
  const [error, setError] = useState(null);
  const inputRef = useRef(null);

  useEffect(() => {
    setError(null); stick.current = true;
    store.openRoom(roomId).catch((e) => setError(e));
    return () => {};
  }, [roomId]);

  const firstSeq = messages.length ? messages[0].seq : null;
  useLayoutEffect(() => {
    const el = listRef.current;
    if (!el) return;
    if (prevFirst.current !== null && firstSeq !== null && firstSeq < prevFirst.current && !stick.current) {
      el.scrollTop += el.scrollHeight - prevHeight.current; // older page prepended: keep the view still
    } else if (stick.current) {
      el.scrollTop = el.scrollHeight;
    }
    prevHeight.current = el.scrollHeight;
    prevFirst.current = firstSeq;
  });

  const onScroll = () => {
    const el = listRef.current;
    stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
    if (el.scrollTop < 80 && s.hasOlder && !s.loadingOlder) store.loadOlder(roomId).catch((e) => setError(e));
  };

  const submit = () => {
    const body = text.trim();
    if (!body) return;
    stick.current = true;
    store.send(roomId, body);
    setText("");
  };
  const typers = store.typers(roomId);
  const title = roomTitle(store, room);
  useEffect(() => { document.title = `${title || "Chat"} · swiftchat`; }, [title]);

  return (
    <section className="chat" aria-labelledby="chat-title" data-testid="chat" data-room-id={roomId}>
      <header className="chat-head">
        <button type="button" className="secondary back" onClick={onBack} aria-label="Back to rooms">←</button>
        <h2 id="chat-title" data-testid="chat-title">{title}</h2>
        <ul className="members" aria-label="Members">
          {Array.from(s.members.entries()).slice(0, 12).map(([id, name]) => {
            const p = id === store.me.id ? (store.conn.state === "connected" ? "online" : "offline") : store.presence.get(id) === "online" ? "online" : "offline";
            return <li key={id} data-testid="member" data-presence={p}><span className={`presence ${p}`} aria-hidden="true" />{id === store.me.id ? "You" : name}<span className="sr-only"> ({p})</span></li>;
          })}
        </ul>
      </header>
      <ErrorText error={error} />
      <ol className="messages" ref={listRef} onScroll={onScroll} aria-label="Messages" aria-live="polite" tabIndex={0} data-testid="messages">
        {s.loadingOlder && <li className="muted small center">Loading older messages…</li>}
        {s.loaded && !s.hasOlder && <li className="muted small center">This is the start of the conversation.</li>}
        {messages.map((m) => <MessageItem key={m.seq} store={store} roomId={roomId} m={m} />)}
        {s.pending.map((p) => (
          <li key={p.client_id} className={`msg mine pending ${p.status}`} data-testid="pending-message" data-status={p.status}>
            <div className="meta"><span className="author">You</span>
              <span className="muted small">{p.status === "failed" ? "Not sent" : p.status === "retrying" ? "Retrying…" : "Sending…"}</span></div>
            <p className="body">{p.body}</p>
            {p.status === "failed" && (
              <div className="actions">
                <span className="error small">{p.error}</span>
                <button type="button" className="link" onClick={() => store.retry(roomId, p.client_id)}>Try again</button>
                <button type="button" className="link" onClick={() => store.discard(roomId, p.client_id)}>Discard</button>
              </div>
            )}
          </li>
        ))}
      </ol>
      <p className="typing" aria-live="polite" data-testid="typing">
        {typers.length ? `${typers.map((u) => store.nameOf(u)).join(", ")} ${typers.length === 1 ? "is" : "are"} typing…` : "\u00a0"}
      </p>
      <form className="composer" onSubmit={(e) => { e.preventDefault(); submit(); }}>
        <label htmlFor="composer" className="sr-only">Message</label>
        <textarea id="composer" ref={inputRef} rows={2} maxLength={4000} placeholder="Write a message (Enter sends, Shift+Enter for a new line)" value={text} data-testid="composer"
          onChange={(e) => { setText(e.target.value); if (e.target.value) store.typingIn(roomId); }}
          onKeyDown={(e) => { if (e.key === "Enter" && !e.shiftKey && !e.nativeEvent.isComposing) { e.preventDefault(); submit(); } }} />
        <button type="submit" data-testid="send">Send</button>
      </form>
    </section>
  );
}

function Home({ me, onLogout, onSessionEnded }) {
  const [store] = useState(() => new ChatStore(me, onSessionEnded));
  useStore(store);
  const [tab, setTab] = useState("rooms");
  const [view, setView] = useState("chat");
  const [roomId, setRoomId] = useState(null);
  useEffect(() => { store.start(); return () => store.stop(); }, []);
  const openRoom = (id) => { setView("chat"); setRoomId(id); };
  const back = () => { store.closeRoom(); setRoomId(null); };
  return (
    <div className={`app${roomId || view === "sessions" ? " has-main" : ""}`}>
      <header className="topbar">
        <span className="brand">swiftchat</span>
        <ConnState store={store} />
        <span className="me" data-testid="me">{me.display_name}</span>
        <button type="button" className="secondary" onClick={() => { store.closeRoom(); setView("sessions"); }} data-testid="open-sessions">Sessions</button>
        <button type="button" className="secondary" onClick={onLogout} data-testid="logout">Log out</button>
      </header>
      <div className="layout">
        <Sidebar store={store} tab={tab} setTab={setTab} openRoom={openRoom} />
        <main className="main">
          {view === "sessions" ? <Sessions onBack={() => setView("chat")} />
            : roomId ? <ChatView key={roomId} store={store} roomId={roomId} onBack={back} />
              : <div className="empty"><p>Pick a room on the left, browse the public rooms, or start a new conversation.</p></div>}
        </main>
      </div>
    </div>
  );
}

function Redirect({ to }) {
  useEffect(() => { navigate(to, true); }, [to]);
  return null;
}

// --- root ------------------------------------------------------------------------------------
function App() {
  const { path, query } = useRoute();
  const [me, setMe] = useState(null);
  const [checking, setChecking] = useState(!!getToken());
  const [flash, setFlash] = useState(null);

  const signedOut = (message) => {
    setToken(null);
    setMe(null);
    if (message) setFlash(message);
    navigate("/login", true);
  };
  useEffect(() => {
    setUnauthorizedHandler(() => signedOut("Your session has ended. Please log in again."));
    if (!getToken()) return;
    api("GET", "/api/me").then((u) => { setMe(u); setChecking(false); },
      (e) => { setChecking(false); if (e.status !== 401) setFlash(e.message); });
  }, []);

  const onLogin = (d) => {
    setToken(d.token);
    setMe(d.user);
    setFlash(null);
    navigate("/", true);
  };
  const logout = async () => {
    try { await api("POST", "/api/auth/logout"); } catch (_) { /* signed out locally anyway */ }
    signedOut("You are logged out.");
  };

  if (path === "/verify-email") return <VerifyEmail query={query} onLogin={onLogin} />;
  const cb = path.match(/^\/auth\/([a-z]+)\/callback$/);
  if (cb) return <OAuthCallback provider={cb[1]} query={query} onLogin={onLogin} />;
  if (path === "/reset-password") return <ResetPassword query={query} />;
  if (path === "/forgot-password") return <ForgotPassword />;
  if (checking) return <AuthFrame title="Loading"><Notice>One moment…</Notice></AuthFrame>;
  if (me) {
    if (path !== "/") return <Redirect to="/" />;
    return <Home key={me.id} me={me} onLogout={logout} onSessionEnded={() => signedOut("Your session has ended. Please log in again.")} />;
  }
  if (path === "/register") return <Register />;
  if (path !== "/login") return <Redirect to="/login" />;
  return <Login onLogin={onLogin} flash={flash} />;
}

createRoot(document.getElementById("root")).render(<App />);
