// The whiteboard page: a small MQTT 3.1.1 client over WebSocket (no library, no CDN)
// and the drawing. Protocol: docs/mqtt-topics.md ("Whiteboards"). The page talks to its
// node's broker with a short-lived credential for the board topics only, fetched from
// /board-credential before each connection (the login token never reaches the page);
// when that node goes away it tries the other nodes the mesh directory named with the
// last credential it got, then resyncs from a snapshot.
"use strict";
(() => {
  const main = document.querySelector("[data-board]");
  const cfg = main.dataset;
  const board = cfg.board, me = cfg.user;
  let token = "";
  const enc = new TextEncoder(), dec = new TextDecoder();
  const T = {
    events: `meteomesh/v1/boards/${board}/events`,
    draw: `meteomesh/v1/boards/${board}/draw/${me}`,
    snapshot: `meteomesh/v1/mesh/users/${me}/boards/${board}/snapshot`,
    directory: "meteomesh/v1/mesh/directory",
    heartbeat: "meteomesh/v1/mesh/heartbeat",
  };

  // ---- MQTT over WebSocket -------------------------------------------------------
  const str = (s) => { const b = enc.encode(s); return [b.length >> 8, b.length & 255, ...b]; };
  const packet = (type, body) => {
    const len = [];
    let n = body.length;
    do { let d = n % 128; n = Math.floor(n / 128); if (n > 0) d |= 128; len.push(d); } while (n > 0);
    return new Uint8Array([type, ...len, ...body]);
  };
  let ws = null, pid = 1, pinger = null, lastBeat = 0, nodeId = "";
  const send = (p) => { if (ws && ws.readyState === 1) ws.send(p); };
  const publish = (topic, obj) =>
    send(packet(0x30, [...str(topic), ...enc.encode(JSON.stringify(obj))]));
  const subscribe = (topics) => {
    const body = [pid >> 8, pid & 255];
    pid = (pid % 65535) + 1;
    for (const t of topics) body.push(...str(t), 1);
    send(packet(0x82, body));
  };

  // Packets may arrive split or several per frame: keep a buffer.
  let inbuf = new Uint8Array(0);
  const onBytes = (bytes) => {
    const b = new Uint8Array(inbuf.length + bytes.length);
    b.set(inbuf); b.set(bytes, inbuf.length); inbuf = b;
    for (;;) {
      if (inbuf.length < 2) return;
      let len = 0, mul = 1, i = 1, d;
      do {
        if (i >= inbuf.length) return;
        d = inbuf[i++]; len += (d & 127) * mul; mul *= 128;
      } while (d & 128);
      if (inbuf.length < i + len) return;
      const type = inbuf[0], body = inbuf.subarray(i, i + len);
      inbuf = inbuf.slice(i + len);
      onPacket(type, body);
    }
  };
  const onPacket = (type, body) => {
    const kind = type >> 4;
    if (kind === 2) { // CONNACK
      if (body[1] !== 0) return fail(`refused (code ${body[1]})`);
      subscribe([T.events, T.snapshot, T.directory, T.heartbeat]);
      publish(T.draw, { type: "here", color: color() });
      publish(T.draw, { type: "snapshot" });
      lastBeat = Date.now();
      setState(true);
    } else if (kind === 3) { // PUBLISH
      const qos = (type >> 1) & 3;
      const tl = (body[0] << 8) | body[1];
      const topic = dec.decode(body.subarray(2, 2 + tl));
      let at = 2 + tl;
      if (qos > 0) { send(new Uint8Array([0x40, 2, body[at], body[at + 1]])); at += 2; }
      let msg;
      try { msg = JSON.parse(dec.decode(body.subarray(at))); } catch { return; }
      onMessage(topic, msg);
    }
  };

  // ---- Nodes and failover ---------------------------------------------------------
  const known = JSON.parse(localStorage.getItem("meteomesh.nodes") || "[]");
  const own = `${location.hostname}:${cfg.wsPort}`;
  const candidates = () => [own, ...known.filter((n) => n !== own)];
  let attempt = 0;
  // A fresh credential from this page's node; while that node is down, the last one.
  const refreshCredential = async () => {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 1500);
    try {
      const r = await fetch("/board-credential", { cache: "no-store", signal: abort.signal });
      if (r.ok) token = (await r.json()).token;
      else if (r.status === 401) location.assign("/login");
    } catch (_) {
      // Node unreachable: keep the credential we have.
    } finally {
      clearTimeout(timer);
    }
  };
  const connect = async () => {
    await refreshCredential();
    const list = candidates();
    const host = list[attempt % list.length];
    attempt += 1;
    setState(false, host);
    const sock = new WebSocket(`ws://${host}/mqtt`, "mqtt");
    sock.binaryType = "arraybuffer";
    ws = sock;
    inbuf = new Uint8Array(0);
    sock.onopen = () => {
      const id = `board-${me}-${Math.random().toString(16).slice(2, 10)}`;
      send(packet(0x10, [...str("MQTT"), 4, 0xc2, 0, 30, ...str(id), ...str(me), ...str(token)]));
    };
    sock.onmessage = (e) => onBytes(new Uint8Array(e.data));
    sock.onclose = () => {
      if (ws !== sock) return;
      ws = null;
      setState(false);
      setTimeout(connect, Math.min(2000, 100 * attempt));
    };
  };
  const fail = (why) => { document.getElementById("state").textContent = `Cannot join: ${why}`; };
  // A node that stops beating is treated as gone (its socket may stay open).
  pinger = setInterval(() => {
    if (!ws || ws.readyState !== 1) return;
    if (lastBeat && Date.now() - lastBeat > 1500) { const s = ws; ws = null; s.close(); setState(false); setTimeout(connect, 50); return; }
    if (Date.now() % 20000 < 250) send(new Uint8Array([0xc0, 0]));
  }, 250);
  setInterval(() => publish(T.draw, { type: "here", color: color() }), 30000);

  // ---- The board ------------------------------------------------------------------
  const canvas = document.getElementById("canvas");
  const ctx = canvas.getContext("2d");
  const state = { epoch: 0, points: new Map(), strokes: new Map(), users: new Map(), connected: false, node: "" };
  window.meteomeshBoard = state;
  const picker = document.getElementById("color");
  const palette = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
  picker.value = localStorage.getItem("meteomesh.color") || palette[Math.floor(Math.random() * palette.length)];
  const color = () => picker.value;
  picker.addEventListener("change", () => {
    localStorage.setItem("meteomesh.color", picker.value);
    publish(T.draw, { type: "here", color: color() });
  });

  const resize = () => {
    const r = canvas.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(r.width * dpr); canvas.height = Math.round(r.height * dpr);
    redraw();
  };
  const segment = (a, b) => {
    ctx.strokeStyle = b.color; ctx.lineWidth = 3 * (window.devicePixelRatio || 1);
    ctx.lineCap = "round"; ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(a.x * canvas.width, a.y * canvas.height);
    ctx.lineTo(b.x * canvas.width, b.y * canvas.height);
    ctx.stroke();
  };
  const redraw = () => {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    for (const pts of state.strokes.values()) {
      for (let i = 0; i < pts.length; i++) segment(pts[Math.max(0, i - 1)], pts[i]);
    }
  };
  const wipe = (epoch) => { state.epoch = epoch; state.points.clear(); state.strokes.clear(); redraw(); };
  const addPoint = (p) => {
    if (p.epoch < state.epoch) return;
    if (p.epoch > state.epoch) wipe(p.epoch);
    const key = `${p.user}/${p.stroke}/${p.seq}`;
    if (state.points.has(key)) return;
    state.points.set(key, p);
    const sk = `${p.user}/${p.stroke}`;
    const pts = state.strokes.get(sk) || [];
    pts.push(p);
    if (pts.length > 1 && pts[pts.length - 2].seq > p.seq) { pts.sort((a, b) => a.seq - b.seq); state.strokes.set(sk, pts); redraw(); return; }
    state.strokes.set(sk, pts);
    segment(pts[Math.max(0, pts.length - 2)], p);
  };
  const renderUsers = () => {
    const ul = document.getElementById("users");
    ul.replaceChildren(...[...state.users.entries()].sort().map(([u, c]) => {
      const li = document.createElement("li");
      const dot = document.createElement("span");
      dot.className = "dot"; dot.style.background = c;
      li.append(dot, document.createTextNode(u === me ? `${u} (you)` : u));
      return li;
    }));
  };
  const onMessage = (topic, m) => {
    if (topic === T.heartbeat) { lastBeat = Date.now(); if (m.node !== nodeId) { nodeId = m.node; setState(true); } return; }
    if (topic === T.directory) {
      const nodes = (m.nodes || []).map((n) => n.ws).filter(Boolean);
      for (const n of nodes) if (!known.includes(n)) known.push(n);
      localStorage.setItem("meteomesh.nodes", JSON.stringify(known));
      return;
    }
    if (topic === T.snapshot) {
      if (m.part === 1 && m.epoch !== state.epoch) wipe(m.epoch);
      for (const p of m.points) addPoint(p);
      state.users = new Map(m.users.map((u) => [u.user, u.color]));
      renderUsers();
      return;
    }
    switch (m.kind) {
      case "clear": if (m.epoch > state.epoch) wipe(m.epoch); break;
      case "here": state.users.set(m.user, m.color); renderUsers(); break;
      case "gone": state.users.delete(m.user); renderUsers(); break;
      default: addPoint(m);
    }
  };

  // ---- Drawing with mouse, pen or touch ---------------------------------------------
  let stroke = null, seq = Number(localStorage.getItem("meteomesh.seq") || 0), lastSent = 0;
  const at = (e) => {
    const r = canvas.getBoundingClientRect();
    return { x: (e.clientX - r.left) / r.width, y: (e.clientY - r.top) / r.height };
  };
  const emit = (type, e) => {
    seq += 1;
    const p = { stroke, seq, ...at(e), color: color(), epoch: state.epoch };
    addPoint({ ...p, user: me, kind: type });
    publish(T.draw, { type, ...p });
  };
  canvas.addEventListener("pointerdown", (e) => {
    canvas.setPointerCapture(e.pointerId);
    stroke = Date.now();
    emit("start", e);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (stroke === null || Date.now() - lastSent < 16) return;
    lastSent = Date.now();
    emit("drag", e);
  });
  const end = (e) => {
    if (stroke === null) return;
    emit("end", e);
    stroke = null;
    localStorage.setItem("meteomesh.seq", String(seq));
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  document.getElementById("clear").addEventListener("click", () => {
    publish(T.draw, { type: "clear", epoch: state.epoch + 1 });
    wipe(state.epoch + 1);
  });

  const setState = (up, host) => {
    state.connected = up; state.node = up ? nodeId : "";
    const el = document.getElementById("state");
    el.textContent = up ? `Connected${nodeId ? ` to node ${nodeId}` : ""}` : `Reconnecting${host ? ` to ${host}` : ""}…`;
    el.className = up ? "ok" : "warn";
  };
  window.addEventListener("resize", resize);
  window.addEventListener("pagehide", () => publish(T.draw, { type: "gone" }));
  resize();
  connect();
})();
