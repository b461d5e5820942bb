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
//   // calls toward this page (the token's `sub` must be the user):
//   gw.addEventListener('invited', async (ev) => { const call = await ev.detail.accept({ stream }); });
//   await gw.register('alice');          // ev.detail.reject() refuses (486; reject('decline') -> 603)

const PROTOCOL_VERSION = 1;
const DTMF_RE = /^[0-9*#A-Da-d]{1,32}$/;

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
   * @param {boolean} [opts.video] offer video too (never sent to SIP; the gateway answers it
   *   `inactive` until it forwards video, so none flows yet)
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
      }
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

  /** The configured ICE servers in use (from the gateway's `welcome`, or the WebGate option). */
  get iceServers() { return this.pc ? this.pc.getConfiguration().iceServers : []; }

  /** True when the browser can also send DTMF in the media (RFC 4733, `RTCDTMFSender`). */
  get canInsertDTMF() {
    const s = this.pc && this.pc.getSenders().find((x) => x.track && x.track.kind === 'audio' && x.dtmf);
    return !!(s && s.dtmf.canInsertDTMF);
  }

  _open() {
    return new Promise((resolve, reject) => {
      let ws;
      try { ws = this.ws = new WebSocket(this.gate.url); } catch (e) { reject(new WebGateError('connection_failed', String(e.message || e))); return; }
      let welcomed = false;
      ws.onmessage = (ev) => {
        let msg;
        try { msg = JSON.parse(ev.data); } catch (e) { return; }
        if (!welcomed && msg.type === 'welcome') {
          welcomed = true;
          this._welcome = msg;
          if (msg.version !== PROTOCOL_VERSION) console.warn('webgate: protocol version', msg.version);
          this._ping = setInterval(() => this._send({ type: 'ping' }), 20000);
          resolve();
          return;
        }
        this._onMessage(msg);
      };
      ws.onerror = () => { if (!welcomed) reject(new WebGateError('connection_failed', 'cannot reach ' + this.gate.url)); };
      ws.onclose = () => {
        if (!welcomed) reject(new WebGateError('connection_failed', 'connection closed by ' + this.gate.url));
        else this._end('connection_lost', null, true);
      };
    });
  }

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
        this.state = msg.state;
        this._emit('progress', { state: msg.state });
        if (msg.state === 'ringing' || msg.state === 'early_media') this._emit('ringing', { state: msg.state, earlyMedia: msg.state === 'early_media' });
        else if (msg.state === 'answered') this._emit('answered', { sessionId: this.sessionId });
        break;
      case 'dtmf':
        this._emit('dtmf', { digit: msg.digit, method: msg.method });
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

export default WebGate;
