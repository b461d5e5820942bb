// webgate.js: browser client for the webgate WebRTC-to-SIP gateway.
// One dependency-free ES module. Protocol: docs/protocol.md (## WebSocket). API: README.md.
//
//   import { WebGate } from '/html5_client/webgate.js';
//   const gw = new WebGate({ url: 'ws://HOST:PORT/ws', token });
//   const call = await gw.call('echo', { stream, video: false, sessionId });
//   call.sessionId; call.remoteStream;
//   call.addEventListener('ringing' | 'answered' | 'dtmf' | 'ended' | 'error', ev => ev.detail);
//   call.sendDTMF('123#'); await call.hold(true); await call.hold(false); call.hangup();
//
//   // video and data by session ID (gw.call(dest, { video: true, data: true }) on the caller's side):
//   call.send('hi'); call.addEventListener('data' | 'watchers', ev => ev.detail);
//   const view = await gw.watch(sessionId, { token, video: true, audio: false });   // the agent's side
//   view.remoteStream; view.send('hello'); view.addEventListener('data' | 'video' | 'ended' | 'error', ...);
//   view.close();
//
//   // calls toward this page (the token's `sub` must be the user):
//   gw.addEventListener('invited', async (ev) => { const call = await ev.detail.accept({ stream }); });
//   await gw.register('alice');          // ev.detail.reject() refuses (486; reject('decline') -> 603)

const PROTOCOL_VERSION = 1;
const DTMF_RE = /^[0-9*#A-Da-d]{1,32}$/;
/** The largest data message (bytes; strings count in UTF-8) the gateway relays. */
export const MAX_DATA_BYTES = 64 * 1024;
/** The label of the data channel `data: true` opens and `send()` uses by default. */
export const DATA_LABEL = 'webgate';

/** An error with a stable `code` (see docs/protocol.md): a refused call rejects with one. */
export class WebGateError extends Error {
  constructor(code, message) {
    super(message || code);
    this.name = 'WebGateError';
    this.code = code;
  }
}

/** The default signalling URL: `/ws` on the server that served the page. */
export function defaultUrl() {
  if (typeof location === 'undefined') return 'ws://127.0.0.1:8080/ws';
  return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
}

function waitForIceGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { clearTimeout(timer); pc.removeEventListener('icegatheringstatechange', check); resolve(); };
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/** The size in bytes of a data message, or -1 when it is not a string, ArrayBuffer or typed array. */
function dataSize(data) {
  if (typeof data === 'string') return data.length > MAX_DATA_BYTES ? data.length : new TextEncoder().encode(data).length;
  if (data instanceof ArrayBuffer) return data.byteLength;
  if (ArrayBuffer.isView(data)) return data.byteLength;
  return -1;
}

function checkData(data) {
  const n = dataSize(data);
  if (n < 0) throw new WebGateError('invalid_data', 'send a string, an ArrayBuffer or a typed array');
  if (n > MAX_DATA_BYTES) throw new WebGateError('data_too_large', 'a data message is at most ' + MAX_DATA_BYTES + ' bytes (this one has more)');
}

/** RTCRtpCodec list for setCodecPreferences: `names` in order (H.264 packetization-mode 1 first). */
function videoCodecPreferences(names) {
  if (typeof RTCRtpReceiver === 'undefined' || !RTCRtpReceiver.getCapabilities) return null;
  const caps = RTCRtpReceiver.getCapabilities('video').codecs;
  const prefs = [];
  for (const n of names) {
    const same = caps.filter((c) => c.mimeType.toLowerCase() === 'video/' + String(n).toLowerCase());
    const mode1 = (c) => /packetization-mode=1/.test(c.sdpFmtpLine || '');
    prefs.push(...same.filter(mode1), ...same.filter((c) => !mode1(c)));
  }
  if (prefs.length === 0) throw new WebGateError('client_error', 'none of the video codecs ' + names.join(', ') + ' is supported');
  return prefs;
}

/**
 * The data channels of one peer connection (a call's or a watch's): messages on any of them
 * become `data` events of `owner`; `send` queues until a channel is open, so order is kept.
 */
class DataChannels {
  constructor(owner, withFrom) {
    this.owner = owner;
    this.withFrom = withFrom;   // a call: detail.from = the gateway-opened channel's protocol || null
    this.list = [];
    this.remote = new WeakSet(); // the channels the gateway opened
    this.queues = new Map();    // channel -> messages waiting for 'open'
  }

  /** Track `ch` (`remote`: the gateway opened it). */
  adopt(ch, remote) {
    if (this.list.includes(ch)) return ch;
    this.list.push(ch);
    if (remote) this.remote.add(ch);
    ch.binaryType = 'arraybuffer';
    ch.addEventListener('open', () => this._flush(ch));
    ch.addEventListener('close', () => { this.queues.delete(ch); this.list = this.list.filter((c) => c !== ch); });
    ch.addEventListener('message', (ev) => {
      const detail = { data: ev.data, label: ch.label };
      if (this.withFrom) detail.from = remote ? (ch.protocol || null) : null;
      this.owner._emit('data', detail);
    });
    return ch;
  }

  /** The channel to send on for `label`: one the page or the gateway opened (the page's first). */
  find(label) {
    const live = this.list.filter((c) => c.label === label && (c.readyState === 'open' || c.readyState === 'connecting'));
    return live.find((c) => !this.remote.has(c)) || live[0] || null;
  }

  send(ch, data) {
    const q = this.queues.get(ch);
    if (ch.readyState === 'open' && !q) { ch.send(data); return; }
    if (ch.readyState !== 'open' && ch.readyState !== 'connecting') throw new WebGateError('no_data_channel', 'the data channel "' + ch.label + '" is closed');
    if (q) q.push(data); else this.queues.set(ch, [data]);
    if (ch.readyState === 'open') this._flush(ch);
  }

  _flush(ch) {
    const q = this.queues.get(ch);
    this.queues.delete(ch);
    if (!q) return;
    for (const m of q) {
      try { ch.send(m); } catch (e) { this.owner._emit('error', { code: 'data_send_failed', message: String(e && e.message || e), ref: 'data' }); return; }
    }
  }
}

/**
 * Open `owner.ws` (a call's or a watch's own WebSocket): resolves on `welcome`; later messages go
 * to `owner._onMessage`, a lost connection to `owner._end('connection_lost', null, true)`.
 */
function openSocket(owner) {
  return new Promise((resolve, reject) => {
    let ws;
    const url = owner._url || owner.gate.url;   // a watch that was redirected: the other node's
    try { ws = owner.ws = new WebSocket(url); } catch (e) { reject(new WebGateError('connection_failed', String(e.message || e))); return; }
    let welcomed = false;
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      if (!welcomed && msg.type === 'welcome') {
        welcomed = true;
        owner._welcome = msg;
        if (msg.version !== PROTOCOL_VERSION) console.warn('webgate: protocol version', msg.version);
        owner._ping = setInterval(() => owner._send({ type: 'ping' }), 20000);
        resolve();
        return;
      }
      owner._onMessage(msg);
    };
    ws.onerror = () => { if (!welcomed) reject(new WebGateError('connection_failed', 'cannot reach ' + url)); };
    ws.onclose = () => {
      if (!welcomed) reject(new WebGateError('connection_failed', 'connection closed by ' + url));
      else owner._end('connection_lost', null, true);
    };
  });
}

/** The gateway answered `redirect`: the watched call lives on another node of a cluster. */
class Redirect extends Error {
  constructor(url) { super('redirected to ' + url); this.url = url; }
}

export class WebGate extends EventTarget {
  /**
   * @param {object} options
   * @param {string} [options.url]   WebSocket URL of the gateway's /ws (default: this page's host)
   * @param {string} [options.token] access token, sent with each call
   * @param {RTCIceServer[]} [options.iceServers] override the ICE servers the gateway hands out
   * @param {number} [options.timeoutMs] how long to wait for the gateway to accept a call (10 s)
   */
  constructor(options = {}) {
    super();
    this.url = options.url || defaultUrl();
    this.token = options.token;
    this.iceServers = options.iceServers;
    this.timeoutMs = options.timeoutMs || 10000;
    this.user = null;           // the registered user (register())
    this._reg = null;           // the registration's WebSocket
    this._regPing = null;
    this._incoming = null;      // the WebGateCall of the incoming call using the registration socket
  }

  _emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  /**
   * Receive calls for `user` while this page is open: opens a WebSocket of its own and registers
   * there with `options.token` (its `sub` must be `user`). Resolves with the user; rejects with a
   * WebGateError (`token_required`, `user_not_allowed`, `invalid_token`, ...). A call toward the
   * user fires an `invited` event: `ev.detail` = { sessionId, from, displayName, to,
   * accept(opts) -> Promise<WebGateCall>, reject(reason) }; `cancelled` fires when the caller gives
   * up first. `unregistered` fires when the registration ends (`detail.reason`: `replaced` by a
   * newer registration of the same user, `token_expired` (the gateway ends a registration when
   * its token expires: register again with a fresh token before then), `connection_lost`).
   * One incoming call at a time.
   */
  register(user, opts = {}) {
    if (this._reg) this.unregister();
    return new Promise((resolve, reject) => {
      let ws;
      try { ws = this._reg = new WebSocket(this.url); } catch (e) { reject(new WebGateError('connection_failed', String(e.message || e))); return; }
      let done = false;
      const timer = setTimeout(() => { if (!done) { done = true; reject(new WebGateError('timeout', 'the gateway did not answer in time')); ws.close(); } }, this.timeoutMs);
      ws.onmessage = (ev) => {
        let msg;
        try { msg = JSON.parse(ev.data); } catch (e) { return; }
        if (msg.type === 'welcome') {
          this._welcome = msg;
          const reg = { type: 'register', user };
          const token = opts.token != null ? opts.token : this.token;
          if (token != null) reg.token = token;
          ws.send(JSON.stringify(reg));
          return;
        }
        if (!done && msg.type === 'registered') {
          done = true; clearTimeout(timer);
          this.user = msg.user;
          this._regPing = setInterval(() => { if (ws.readyState === WebSocket.OPEN) ws.send('{"type":"ping"}'); }, 20000);
          resolve(msg.user);
          return;
        }
        if (!done && msg.type === 'error' && msg.ref === 'register') {
          done = true; clearTimeout(timer);
          reject(new WebGateError(msg.code, msg.message));
          ws.close();
          return;
        }
        this._onRegMessage(msg);
      };
      ws.onerror = () => { if (!done) { done = true; clearTimeout(timer); reject(new WebGateError('connection_failed', 'cannot reach ' + this.url)); } };
      ws.onclose = () => {
        if (this._reg !== ws) return;
        this._dropRegistration('connection_lost');
      };
    });
  }

  /** Stop receiving calls (closes the registration's WebSocket and any call on it). */
  unregister() {
    const ws = this._reg;
    if (!ws) return;
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'unregister' }));
    this._dropRegistration('client');
    ws.close();
  }

  _dropRegistration(reason) {
    const user = this.user;
    if (this._regPing) { clearInterval(this._regPing); this._regPing = null; }
    this._reg = null;
    this.user = null;
    if (this._incoming) this._incoming._end('connection_lost', null, true);
    this._incoming = null;
    if (user) this._emit('unregistered', { user, reason });
  }

  _onRegMessage(msg) {
    if (msg.type === 'invited') {
      const ws = this._reg;
      let settled = false;
      const info = {
        sessionId: msg.session_id,
        from: msg.from,
        displayName: msg.display_name || null,
        to: msg.to,
        accept: async (opts = {}) => {
          if (settled) throw new WebGateError('no_call', 'already accepted or rejected');
          settled = true;
          const call = new WebGateCall(this, msg.to, opts);
          call.sessionId = msg.session_id;
          call.direction = 'inbound';
          this._incoming = call;
          await call._start({ ws, welcome: this._welcome, accept: msg.call });
          return call;
        },
        reject: (reason) => {
          if (settled) return;
          settled = true;
          if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'reject', call: msg.call, reason: reason || 'busy' }));
        },
      };
      this._pendingInvite = { msg, info, isSettled: () => settled };
      this._emit('invited', info);
      return;
    }
    if (msg.type === 'unregistered') {
      const ws = this._reg;
      this._dropRegistration(msg.reason || 'unregistered');
      if (ws) ws.close();
      return;
    }
    const call = this._incoming;
    if (call && call.state !== 'ended') {
      call._onMessage(msg);
      if (call.state === 'ended') this._incoming = null;
      return;
    }
    const pending = this._pendingInvite;
    if (msg.type === 'ended' && pending && msg.session_id === pending.msg.session_id) {
      this._pendingInvite = null;
      if (!pending.isSettled() || msg.cause === 'cancelled') this._emit('cancelled', { sessionId: msg.session_id, cause: msg.cause });
    }
  }

  /**
   * Place a call. Resolves once the gateway accepted it and assigned `call.sessionId`
   * (before the far end answers); rejects with a WebGateError (`err.code`) when refused.
   * @param {string} destination
   * @param {object} [opts]
   * @param {MediaStream} [opts.stream] microphone (and camera) to send; default: getUserMedia
   * @param {boolean} [opts.video] send the camera too: never sent to SIP, it stays with the
   *   session, for watchers (gw.watch) of its session ID
   * @param {boolean} [opts.data] open a data channel labelled `webgate` in the offer
   *   (call.send(); messages from watchers arrive as `data` events)
   * @param {string[]} [opts.videoCodecs] video codecs to offer, in order (e.g. ['H264'] for
   *   RTMP-compatible video; setCodecPreferences)
   * @param {function(RTCPeerConnection)} [opts.onPeerConnection] called with `call.pc` before
   *   the offer: channels opened there (pc.createDataChannel) are kept and relayed by label
   * @param {string} [opts.sessionId] bring your own session ID (8-10 digits, not in use)
   * @param {string} [opts.displayName] caller display name for SIP
   * @param {string[]} [opts.audioCodecs] audio codecs to offer, in order (e.g. ['PCMU'] or ['opus']);
   *   default: the browser's own order (the gateway still picks the SIP side's codec when offered)
   */
  async call(destination, opts = {}) {
    const call = new WebGateCall(this, destination, opts);
    await call._start();
    return call;
  }

  /**
   * Watch a web call by its session ID: the caller's video and data (an agent's console; with
   * `audio: true` also the call's audio, both parties mixed). Opens a WebSocket of its own.
   * Resolves once the gateway accepted the watch, before media; rejects with a WebGateError
   * (`not_found`: no such call or not allowed, the same answer for both; `too_many_watchers`;
   * `invalid_sdp`; `timeout`; `connection_failed`; the attempt-rate code).
   * @param {string} sessionId
   * @param {object} [opts]
   * @param {string} [opts.token] a token allowing the watch (its `watch` claim covers the session
   *   ID, or its `sub` is the caller's); default: the WebGate's token
   * @param {boolean} [opts.video] receive the caller's video (default true)
   * @param {boolean} [opts.audio] receive the call's audio, both parties mixed (default false)
   * @param {string[]} [opts.videoCodecs] video codecs to offer (default: all the browser has;
   *   the gateway answers the caller's codec)
   */
  async watch(sessionId, opts = {}) {
    const view = new WebGateWatch(this, String(sessionId), opts);
    await view._start();
    return view;
  }
}

export class WebGateCall extends EventTarget {
  constructor(gate, destination, opts) {
    super();
    this.gate = gate;
    this.destination = destination;
    this.opts = opts;
    this.sessionId = null;
    this.codec = null;          // the audio codec toward the browser (PCMU, opus, ...)
    this.state = 'new';         // new, connecting, trying, ringing, early_media, answered, ended
    this.endCause = null;
    this.remoteStream = new MediaStream();
    this.localStream = null;
    this.pc = null;
    this.ws = null;
    this._ownStream = false;
    this._pending = null;       // {resolve, reject} while waiting for 'accepted'
    this.held = false;          // the phone is on hold (call.hold)
    this._holdWait = null;      // {resolve, reject} while a hold/resume is in progress
    this._ping = null;
    this._welcome = null;
    this._shared = false;       // an incoming call on the registration's WebSocket (kept open)
    this.direction = 'outbound';
    this.watchers = 0;          // how many watch this call's video and data (gw.watch)
    this._data = new DataChannels(this, true);
  }

  _emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  _send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  async _start(incoming) {
    const opts = this.opts;
    this.state = 'connecting';
    const timeoutMs = this.gate.timeoutMs;
    const accepted = new Promise((resolve, reject) => { this._pending = { resolve, reject }; });
    const timer = setTimeout(() => this._fail(new WebGateError('timeout', 'the gateway did not answer in time')), timeoutMs);
    try {
      if (incoming) {
        this.ws = incoming.ws;
        this._welcome = incoming.welcome;
        this._shared = true;
      } else {
        await this._open();
      }
      let stream = opts.stream;
      if (!stream) {
        stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: !!opts.video });
        this._ownStream = true;
      }
      this.localStream = stream;
      const iceServers = this.gate.iceServers || (this._welcome && this._welcome.ice_servers) || [];
      const pc = this.pc = new RTCPeerConnection({ iceServers });
      // every data channel on call.pc (the page's, `data: true`'s, the gateway's) gives `data` events
      const createDataChannel = pc.createDataChannel.bind(pc);
      pc.createDataChannel = (label, init) => this._data.adopt(createDataChannel(label, init), false);
      pc.ondatachannel = (ev) => this._data.adopt(ev.channel, true);
      pc.ontrack = (ev) => { this.remoteStream.addTrack(ev.track); this._emit('track', { track: ev.track }); };
      pc.onconnectionstatechange = () => {
        this._emit('connectionstatechange', { state: pc.connectionState });
        if (pc.connectionState === 'failed') this._end('ice_failed', null, true);
      };
      const audio = stream.getAudioTracks();
      if (audio.length) audio.forEach((t) => pc.addTrack(t, stream));
      else pc.addTransceiver('audio', { direction: 'recvonly' });
      if (opts.audioCodecs) this._preferCodecs(pc, opts.audioCodecs);
      if (opts.video) {
        const video = stream.getVideoTracks();
        if (video.length) video.forEach((t) => pc.addTrack(t, stream));
        else pc.addTransceiver('video', { direction: 'recvonly' });
        if (opts.videoCodecs) this._preferVideoCodecs(pc, opts.videoCodecs);
      }
      if (opts.data) pc.createDataChannel(DATA_LABEL, { ordered: true });
      if (opts.onPeerConnection) await opts.onPeerConnection(pc);
      await pc.setLocalDescription(await pc.createOffer());
      // send the offer with the candidates gathered so far; later ones are trickled
      await waitForIceGathering(pc, 1500);
      pc.onicecandidate = (ev) => this._send({ type: 'candidate', candidate: ev.candidate ? ev.candidate.toJSON() : null });
      const msg = incoming
        ? { type: 'accept', call: incoming.accept, sdp: pc.localDescription.sdp }
        : { type: 'call', destination: this.destination, sdp: pc.localDescription.sdp };
      if (!incoming) {
        if (opts.sessionId != null) msg.session_id = String(opts.sessionId);
        if (opts.displayName != null) msg.display_name = opts.displayName;
        if (this.gate.token != null) msg.token = this.gate.token;
      }
      this._send(msg);
      if (pc.iceGatheringState === 'complete') this._send({ type: 'candidate', candidate: null });
      await accepted;
    } catch (err) {
      this._fail(err instanceof WebGateError ? err : new WebGateError(err && err.name === 'NotAllowedError' ? 'media_denied' : 'client_error', String(err && err.message || err)));
      await accepted.catch(() => {});
      throw this._error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Offer only `names` (mime subtypes, in order) for audio, plus telephone-event (RTCDTMFSender). */
  _preferCodecs(pc, names) {
    if (typeof RTCRtpReceiver === 'undefined' || !RTCRtpReceiver.getCapabilities) return;
    const caps = RTCRtpReceiver.getCapabilities('audio').codecs;
    const prefs = [];
    for (const n of names.concat(['telephone-event'])) {
      prefs.push(...caps.filter((c) => c.mimeType.toLowerCase() === 'audio/' + String(n).toLowerCase()));
    }
    if (prefs.length === 0) throw new WebGateError('client_error', 'none of the audio codecs ' + names.join(', ') + ' is supported');
    pc.getTransceivers()
      .filter((t) => t.receiver && t.receiver.track && t.receiver.track.kind === 'audio' && t.setCodecPreferences)
      .forEach((t) => t.setCodecPreferences(prefs));
  }

  /** Offer only the video codecs `names` (mime subtypes, in order; H.264 packetization-mode 1 first). */
  _preferVideoCodecs(pc, names) {
    const prefs = videoCodecPreferences(names);
    if (prefs === null) return;
    pc.getTransceivers()
      .filter((t) => t.receiver && t.receiver.track && t.receiver.track.kind === 'video' && t.setCodecPreferences)
      .forEach((t) => t.setCodecPreferences(prefs));
  }

  /**
   * Send `data` (a string, ArrayBuffer or typed array of at most 64 KiB) to every watcher, on
   * the `webgate` channel (`data: true`) or, with `{ label }`, on the page's channel of that
   * label. Sent in order (queued until the channel is open). Throws a WebGateError:
   * `data_too_large`, `invalid_data`, `no_data_channel`, `no_call`.
   */
  send(data, options = {}) {
    if (this.state === 'ended') throw new WebGateError('no_call', 'the call has ended');
    checkData(data);
    const label = options.label != null ? String(options.label) : DATA_LABEL;
    const ch = this._data.find(label);
    if (!ch) throw new WebGateError('no_data_channel', 'no data channel "' + label + '" (call with { data: true })');
    this._data.send(ch, data);
  }

  /** The configured ICE servers in use (from the gateway's `welcome`, or the WebGate option). */
  get iceServers() { return this.pc ? this.pc.getConfiguration().iceServers : []; }

  /** True when the browser can also send DTMF in the media (RFC 4733, `RTCDTMFSender`). */
  get canInsertDTMF() {
    const s = this.pc && this.pc.getSenders().find((x) => x.track && x.track.kind === 'audio' && x.dtmf);
    return !!(s && s.dtmf.canInsertDTMF);
  }

  _open() { return openSocket(this); }

  _onMessage(msg) {
    switch (msg.type) {
      case 'accepted':
        this.sessionId = msg.session_id;
        this.codec = msg.codec || null;
        this.state = 'trying';
        if (this._pending) { this._pending.resolve(this); this._pending = null; }
        this._emit('accepted', { sessionId: this.sessionId, codec: this.codec });
        break;
      case 'answer':
        this.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp })
          .catch((e) => this._emit('error', { code: 'invalid_sdp', message: String(e.message || e) }));
        break;
      case 'candidate':
        if (msg.candidate) this.pc.addIceCandidate(msg.candidate).catch(() => {});
        break;
      case 'progress':
        if (msg.state === 'held' || msg.state === 'resumed') {   // our hold(): the far end agreed
          this.held = msg.state === 'held';
          this._holdDone(null);
          this._emit(msg.state, { held: this.held });
          break;
        }
        if (msg.state === 'transferred') {   // the phone side transferred the call: still answered
          this._emit('progress', { state: msg.state });
          this._emit('transferred', { sessionId: this.sessionId });
          break;
        }
        this.state = msg.state;
        this._emit('progress', { state: msg.state });
        if (msg.state === 'ringing' || msg.state === 'early_media') this._emit('ringing', { state: msg.state, earlyMedia: msg.state === 'early_media' });
        else if (msg.state === 'answered') this._emit('answered', { sessionId: this.sessionId });
        break;
      case 'dtmf':
        this._emit('dtmf', { digit: msg.digit, method: msg.method });
        break;
      case 'watchers':
        this.watchers = msg.count;
        this._emit('watchers', { count: msg.count });
        break;
      case 'ended':
        this._end(msg.cause, msg.status == null ? null : msg.status, false);
        break;
      case 'error':
        if (msg.ref === 'hold' && this._holdWait) {
          this._holdDone(new WebGateError(msg.code, msg.message));
          this._emit('error', { code: msg.code, message: msg.message, ref: msg.ref, status: msg.status });
          break;
        }
        // a refused ICE candidate (ref 'candidate') is not the call's end: the others may connect
        if (this._pending && msg.ref !== 'candidate') this._fail(new WebGateError(msg.code, msg.message));
        else this._emit('error', { code: msg.code, message: msg.message, ref: msg.ref });
        break;
      default:
        break;   // pong and future message types
    }
  }

  _fail(err) {
    this._error = err;
    if (this._pending) { this._pending.reject(err); this._pending = null; }
    this._cleanup();
  }

  _end(cause, status, local) {
    if (this.state === 'ended') return;
    this.state = 'ended';
    this._holdDone(new WebGateError('no_call', 'the call has ended'));
    this.endCause = cause;
    this._cleanup();
    this._emit('ended', { cause, status, local: !!local });
  }

  _cleanup() {
    if (this._ping) { clearInterval(this._ping); this._ping = null; }
    if (this.pc) { try { this.pc.close(); } catch (e) { /* closed */ } }
    if (this._ownStream && this.localStream) this.localStream.getTracks().forEach((t) => t.stop());
    const ws = this.ws;
    if (ws && !this._shared) {
      ws.onclose = null;
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close();
    }
  }

  /**
   * Send DTMF digits (0-9 * # A-D) toward the phone. By default they are signalled (`dtmf`
   * message); with `{ inband: true }` they go in the media as RFC 4733 (`RTCDTMFSender`)
   * when `canInsertDTMF`, else signalled. See README.md.
   */
  sendDTMF(digits, durationMs, options = {}) {
    digits = String(digits);
    if (!DTMF_RE.test(digits)) throw new WebGateError('invalid_dtmf', 'digits must be 1-32 of 0-9 * # A-D');
    if (this.state === 'ended') throw new WebGateError('no_call', 'the call has ended');
    if (options.inband && this.canInsertDTMF) {
      const s = this.pc.getSenders().find((x) => x.track && x.track.kind === 'audio' && x.dtmf);
      s.dtmf.insertDTMF(digits.toUpperCase(), Math.max(40, Math.min(durationMs || 160, 6000)), 70);
      return;
    }
    const msg = { type: 'dtmf', digits };
    if (durationMs != null) msg.duration_ms = durationMs;
    this._send(msg);
  }

  /**
   * Put the phone on hold (`true`, the default) or resume it (`false`): the gateway sends a
   * SIP re-INVITE (a=sendonly / a=sendrecv). Resolves with the hold state (`call.held`) once
   * the far end agreed (events 'held' / 'resumed'); rejects with a WebGateError
   * (`hold_failed`: the far end refused, the call goes on; `hold_pending`; `no_call`).
   */
  hold(on = true) {
    if (this.state === 'ended') return Promise.reject(new WebGateError('no_call', 'the call has ended'));
    if (this._holdWait) return Promise.reject(new WebGateError('hold_pending', 'a hold/resume is in progress'));
    return new Promise((resolve, reject) => {
      this._holdWait = { resolve, reject };
      this._send({ type: 'hold', on: !!on });
    });
  }

  _holdDone(err) {
    const w = this._holdWait;
    this._holdWait = null;
    if (!w) return;
    if (err) w.reject(err); else w.resolve(!!this.held);
  }

  /** Hang up (CANCEL before answer, BYE after). Fires 'ended' with cause 'client_hangup'. */
  hangup() {
    if (this.state === 'ended') return;
    this._send({ type: 'hangup' });
    this._end('client_hangup', null, true);
  }
}

/**
 * One watch of a call's video and data (gw.watch). Events: `data` {data, label}, `video`
 * {width, height, codec} (first decodable frame), `ended` {cause}, `error` {code, message, ref}.
 */
export class WebGateWatch extends EventTarget {
  constructor(gate, sessionId, opts) {
    super();
    this.gate = gate;
    this.opts = opts;
    this.sessionId = sessionId;
    this.state = 'new';         // new, connecting, watching, ended
    this.endCause = null;
    this.video = null;          // the gateway's {codec, width, height} of the caller's video (codec null: none for us)
    this.remoteStream = new MediaStream();
    this.pc = null;
    this.ws = null;
    this._pending = null;
    this._ping = null;
    this._welcome = null;
    this._videoShown = false;   // the `video` event fired
    this._videoNone = false;    // ... with codec null (no video for this watcher)
    this._probe = null;         // {el, timer} while waiting for the first frame
    this._data = new DataChannels(this, false);
  }

  _emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  _send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  async _start() {
    this.state = 'connecting';
    const timer = setTimeout(() => this._fail(new WebGateError('timeout', 'the gateway did not answer in time')), this.gate.timeoutMs);
    try {
      try {
        await this._attempt();
      } catch (err) {
        if (!(err instanceof Redirect) || this.state === 'ended') throw err;
        // a cluster: the call lives on another node. Watch there, once (a second redirect fails)
        this._cleanup();
        this._url = err.url;
        this._data = new DataChannels(this, false);
        await this._attempt();
      }
    } catch (err) {
      if (this.state !== 'ended') this._fail(err instanceof WebGateError ? err : new WebGateError('client_error', String(err && err.message || err)));
      throw this._error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** One try: open the WebSocket, offer, send `watch`; resolves on `watching`. */
  async _attempt() {
    const opts = this.opts;
    const accepted = new Promise((resolve, reject) => { this._pending = { resolve, reject }; });
    accepted.catch(() => {});
    await openSocket(this);
    const iceServers = this.gate.iceServers || (this._welcome && this._welcome.ice_servers) || [];
    const pc = this.pc = new RTCPeerConnection({ iceServers });
    const createDataChannel = pc.createDataChannel.bind(pc);
    pc.createDataChannel = (label, init) => this._data.adopt(createDataChannel(label, init), false);
    pc.ondatachannel = (ev) => this._data.adopt(ev.channel, true);
    pc.ontrack = (ev) => {
      this.remoteStream.addTrack(ev.track);
      this._emit('track', { track: ev.track });
      if (ev.track.kind === 'video') this._waitForFrame(ev.track);
    };
    pc.onconnectionstatechange = () => {
      this._emit('connectionstatechange', { state: pc.connectionState });
      if (pc.connectionState === 'failed') this._end('ice_failed', null, true);
    };
    if (opts.video !== false) {
      const t = pc.addTransceiver('video', { direction: 'recvonly' });
      if (opts.videoCodecs) {
        const prefs = videoCodecPreferences(opts.videoCodecs);
        if (prefs && t.setCodecPreferences) t.setCodecPreferences(prefs);
      }
    }
    if (opts.audio) pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.createDataChannel(DATA_LABEL, { ordered: true });
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc, 1500);
    pc.onicecandidate = (ev) => this._send({ type: 'candidate', candidate: ev.candidate ? ev.candidate.toJSON() : null });
    const msg = { type: 'watch', session_id: this.sessionId, sdp: pc.localDescription.sdp };
    if (opts.audio) msg.audio = true;   // the call's audio, both parties mixed (silent monitoring)
    const token = opts.token != null ? opts.token : this.gate.token;
    if (token != null) msg.token = token;
    this._send(msg);
    if (pc.iceGatheringState === 'complete') this._send({ type: 'candidate', candidate: null });
    await accepted;
  }

  // the WebSocket's messages (WebGateCall._open hands them here)
  _onMessage(msg) {
    switch (msg.type) {
      case 'watching':
        if (msg.session_id) this.sessionId = msg.session_id;
        this.state = 'watching';
        this._setVideo(msg.video || null);
        if (this._pending) { this._pending.resolve(this); this._pending = null; }
        this._emit('watching', { sessionId: this.sessionId, video: this.video });
        break;
      case 'answer':
        this.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp })
          .catch((e) => this._emit('error', { code: 'invalid_sdp', message: String(e.message || e), ref: 'watch' }));
        break;
      case 'candidate':
        if (msg.candidate) this.pc.addIceCandidate(msg.candidate).catch(() => {});
        break;
      case 'video':
        this._setVideo({ codec: msg.codec == null ? null : msg.codec, width: msg.width, height: msg.height });
        break;
      case 'redirect':   // the call lives on another node (docs/protocol.md): _start follows it once
        if (!this._pending) break;
        if (!this._url && typeof msg.url === 'string' && /^wss?:\/\//i.test(msg.url)) {
          const p = this._pending;
          this._pending = null;
          p.reject(new Redirect(msg.url));
        } else {
          this._fail(new WebGateError('redirect_loop', 'redirected again, to ' + msg.url));
        }
        break;
      case 'ended':
        if (this._pending) this._fail(new WebGateError(msg.cause || 'ended', 'the watch ended: ' + msg.cause));
        else this._end(msg.cause, null, false);
        break;
      case 'error':
        if (this._pending && msg.ref !== 'candidate') this._fail(new WebGateError(msg.code, msg.message));
        else this._emit('error', { code: msg.code, message: msg.message, ref: msg.ref });
        break;
      default:
        break;   // pong and future message types
    }
  }

  _setVideo(video) {
    this.video = video;
    // the caller's video cannot reach this watcher (e.g. Sorenson/VP6 without transcoding): data only
    if (video && video.codec == null && !this._videoShown) {
      this._videoShown = this._videoNone = true;
      this._emit('video', { width: video.width == null ? null : video.width, height: video.height == null ? null : video.height, codec: null });
    } else if (video && video.codec && this._videoNone) {   // now it can: wait for its first frame
      this._videoShown = this._videoNone = false;
      this.remoteStream.getVideoTracks().forEach((t) => this._waitForFrame(t));
    }
  }

  /** Fire `video` once the first frame of `track` is decoded (a hidden <video> element, and the stats). */
  _waitForFrame(track) {
    if (this._videoShown || this._probe || typeof document === 'undefined') return;
    const el = document.createElement('video');
    el.muted = true; el.playsInline = true; el.autoplay = true;
    el.srcObject = new MediaStream([track]);
    const probe = this._probe = { el, timer: null };
    const shown = (width, height, statsCodec) => {
      if (this._videoShown || this._probe !== probe || !width || !height) return;
      this._videoShown = true;
      this._stopProbe();
      const codec = (this.video && this.video.codec) || statsCodec || null;
      this._emit('video', { width, height, codec });
    };
    const fromElement = () => shown(el.videoWidth, el.videoHeight);
    if (el.requestVideoFrameCallback) el.requestVideoFrameCallback((now, meta) => shown(meta.width, meta.height));
    el.addEventListener('loadeddata', fromElement);
    el.addEventListener('resize', fromElement);
    el.play().catch(() => {});
    const poll = async () => {
      if (this._probe !== probe || !this.pc) return;
      try {
        const stats = await this.pc.getStats(track);
        let codec = null, width = 0, height = 0;
        const codecs = {};
        stats.forEach((r) => { if (r.type === 'codec') codecs[r.id] = r.mimeType; });
        stats.forEach((r) => {
          if (r.type === 'inbound-rtp' && r.kind === 'video' && r.framesDecoded > 0) {
            width = r.frameWidth; height = r.frameHeight;
            codec = codecs[r.codecId] ? codecs[r.codecId].replace(/^video\//i, '').toUpperCase() : null;
          }
        });
        shown(width, height, codec);
      } catch (e) { /* closed */ }
      if (this._probe === probe) probe.timer = setTimeout(poll, 100);
    };
    probe.timer = setTimeout(poll, 100);
  }

  _stopProbe() {
    const probe = this._probe;
    this._probe = null;
    if (!probe) return;
    clearTimeout(probe.timer);
    probe.el.pause();
    probe.el.srcObject = null;
  }

  /**
   * Send `data` (a string, ArrayBuffer or typed array of at most 64 KiB) to the caller, on the
   * channel labelled `options.label` (default `webgate`; opened when there is none). In order.
   * Throws a WebGateError: `data_too_large`, `invalid_data`, `no_data_channel`, `no_call`.
   */
  send(data, options = {}) {
    if (this.state === 'ended' || !this.pc) throw new WebGateError('no_call', 'the watch has ended');
    checkData(data);
    const label = options.label != null ? String(options.label) : DATA_LABEL;
    const ch = this._data.find(label) || this.pc.createDataChannel(label, { ordered: true });
    this._data.send(ch, data);
  }

  _fail(err) {
    this._error = err;
    if (this._pending) { this._pending.reject(err); this._pending = null; }
    this.state = 'ended';
    this.endCause = err.code;
    this._cleanup();
  }

  _end(cause, status, local) {
    if (this.state === 'ended') return;
    this.state = 'ended';
    this.endCause = cause;
    this._cleanup();
    this._emit('ended', { cause, local: !!local });
  }

  _cleanup() {
    this._stopProbe();
    if (this._ping) { clearInterval(this._ping); this._ping = null; }
    if (this.pc) { try { this.pc.close(); } catch (e) { /* closed */ } }
    const ws = this.ws;
    if (ws) {
      ws.onclose = null;
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close();
    }
  }

  /** End the watch (the caller sees one watcher fewer). Fires `ended` with cause `client_hangup`. */
  close() {
    if (this.state === 'ended') return;
    this._send({ type: 'hangup' });
    this._end('client_hangup', null, true);
  }
}

export default WebGate;
