// webgate Flash webphone: NetConnection + NetStream publish/play, Microphone (Speex or G.711),
// optional Camera, dial pad, DTMF, session ID display, and a chat with whoever watches the call
// (sendData / the data and watchers callbacks). Speaks the Flash RPC protocol of
// docs/protocol.md ("RTMP" section). Build: see ../README.md.
package {
    import flash.display.Sprite;
    import flash.display.StageAlign;
    import flash.display.StageScaleMode;
    import flash.events.MouseEvent;
    import flash.events.NetStatusEvent;
    import flash.events.AsyncErrorEvent;
    import flash.events.SecurityErrorEvent;
    import flash.media.Camera;
    import flash.media.Microphone;
    import flash.media.SoundCodec;
    import flash.media.Video;
    import flash.net.NetConnection;
    import flash.net.NetStream;
    import flash.net.Responder;
    import flash.system.Capabilities;
    import flash.text.TextField;
    import flash.text.TextFieldType;
    import flash.text.TextFormat;

    [SWF(width="320", height="500", backgroundColor="#f4f4f4", frameRate="24")]
    public class Webphone extends Sprite {
        // FlashVars: server (rtmp://HOST/sip/USER@DOMAIN), auth, password, name, codec (speex|pcmu|pcma), camera (1)
        private var server:String = "rtmp://127.0.0.1/sip/alice@example.net";
        private var authName:String = "";
        private var password:String = "";
        private var displayName:String = "";
        private var micCodec:String = "speex";
        private var useCamera:Boolean = false;

        private var nc:NetConnection;
        private var mic:NetStream;   // our microphone (published as "local")
        private var spk:NetStream;   // the far end (played as "remote")
        private var inCall:Boolean = false;
        private var ringingIn:Boolean = false;   // a call toward us is waiting for accept/reject

        private var dest:TextField;
        private var status:TextField;
        private var sessionField:TextField;
        private var chatInput:TextField;   // a message to the call's watchers (sendData)
        private var chatLog:TextField;     // what was sent and what watchers sent back (data)

        public function Webphone() {
            stage.scaleMode = StageScaleMode.NO_SCALE;
            stage.align = StageAlign.TOP_LEFT;
            var p:Object = loaderInfo.parameters;
            if (p.server) server = String(p.server);
            if (p.auth) authName = String(p.auth);
            if (p.password) password = String(p.password);
            if (p.name) displayName = String(p.name);
            if (p.codec) micCodec = String(p.codec);
            useCamera = p.camera == "1";
            buildUi();
            connect();
        }

        // ---- signalling -------------------------------------------------------------------
        private function connect():void {
            nc = new NetConnection();
            nc.client = this;   // server -> client callbacks are the public methods below
            nc.addEventListener(NetStatusEvent.NET_STATUS, onNetStatus);
            nc.addEventListener(SecurityErrorEvent.SECURITY_ERROR, function(e:SecurityErrorEvent):void { show("security error: " + e.text); });
            nc.addEventListener(AsyncErrorEvent.ASYNC_ERROR, function(e:AsyncErrorEvent):void { show("async error: " + e.text); });
            // Flash Player 11+ plays G.711 directly; ask for it (older players get Nellymoser by default)
            var outCodec:String = majorVersion() >= 11 ? "g711" : "nellymoser";
            nc.connect(server, authName, password, displayName, {codec: outCodec});
            show("connecting to " + server);
        }

        private function onNetStatus(e:NetStatusEvent):void {
            var code:String = e.info.code;
            if (code == "NetConnection.Connect.Success") {
                show("ready");
                startStreams();
            } else if (code.indexOf("NetConnection.Connect.") == 0) {
                show("disconnected: " + (e.info.description || code));
                inCall = false;
            }
        }

        private function startStreams():void {
            spk = new NetStream(nc);
            spk.bufferTime = 0;
            spk.play("remote");

            mic = new NetStream(nc);
            var m:Microphone = majorVersion() >= 11 ? Microphone.getEnhancedMicrophone() : Microphone.getMicrophone();
            if (m == null) m = Microphone.getMicrophone();
            if (m != null) {
                if (micCodec == "pcmu" || micCodec == "pcma") {
                    m.codec = micCodec == "pcmu" ? SoundCodec.PCMU : SoundCodec.PCMA;   // FP 11+: relayed to SIP untranscoded
                    m.rate = 8;
                } else {
                    m.codec = SoundCodec.SPEEX;
                    m.encodeQuality = 8;
                    m.framesPerPacket = 1;
                }
                m.setSilenceLevel(0);
                m.setUseEchoSuppression(true);
                mic.attachAudio(m);
            }
            if (useCamera) {
                var cam:Camera = Camera.getCamera();
                if (cam != null) {
                    cam.setMode(320, 240, 15);
                    mic.attachCamera(cam);   // video stays with the session, never reaches SIP
                    var v:Video = new Video(160, 120);
                    v.attachCamera(cam);
                    v.x = 150; v.y = 290;
                    addChild(v);
                }
            }
            mic.publish("local", "live");
        }

        private function invite(to:String):void {
            if (to.length == 0) return;
            nc.call("invite", new Responder(
                function(sessionId:String):void { sessionField.text = "session " + sessionId; },
                function(err:Object):void { show("refused: " + (err.reason || err.description)); }
            ), to);
            inCall = true;
            show("calling " + to);
        }

        private function bye():void {
            nc.call("bye", null);
            inCall = false;
            show("hung up");
        }

        private function accept():void {
            if (!ringingIn) return;
            ringingIn = false;
            nc.call("accept", new Responder(
                function(sessionId:String):void { inCall = true; sessionField.text = "session " + sessionId; show("answering"); },
                function(err:Object):void { show("accept failed: " + (err.reason || err.description)); }
            ));
        }

        private function reject():void {
            if (!ringingIn) return;
            ringingIn = false;
            nc.call("reject", null, "busy");   // 486 Busy Here; "decline" -> 603 Decline
            show("rejected");
        }

        // a message to everyone watching the call (an agent's console, a supervisor), label "webgate"
        private function sendChat():void {
            var text:String = chatInput.text;
            if (!inCall || text.length == 0) return;
            nc.call("sendData", new Responder(
                function(ok:Boolean):void { chatLog.appendText("me: " + text + "\n"); chatInput.text = ""; },
                function(err:Object):void { show("not sent: " + (err.reason || err.description)); }
            ), text);
        }

        private function sendDigit(d:String):void {
            if (inCall) nc.call("sendDTMF", null, d);
            else dest.appendText(d);
        }

        // ---- server -> client callbacks (docs/protocol.md, "RTMP") -------------------------
        public function sessionId(id:String):void { sessionField.text = "session " + id; }
        public function ringing():void { show("ringing"); }
        public function accepted():void { show("connected"); }
        public function rejected(reason:String):void { inCall = false; show("rejected: " + reason); }
        public function cancelled():void { inCall = false; ringingIn = false; show("cancelled"); }
        public function byed():void { inCall = false; show("call ended"); }
        // a call toward this user (registered with a call token whose sub is the user): Accept / Reject
        public function invited(from:String = "", to:String = ""):void { ringingIn = true; show("incoming call from " + from); }
        public function registered(user:String = ""):void { show("ready; receiving calls for " + user); }
        public function unregistered(reason:String = ""):void { show("not receiving calls: " + reason); }
        public function dtmf(digit:String):void { show("DTMF " + digit + " from the phone"); }
        // who watches the call (the caller should know who is looking), and what they write
        public function watchers(count:int):void { show(count == 1 ? "1 watcher" : count + " watchers"); }
        public function data(message:String, label:String = null, from:String = null, encoding:String = null):void {
            if (encoding == "base64") message = "(" + message.length + " base64 characters of binary data)";
            chatLog.appendText((from || "watcher") + (label && label != "webgate" ? " [" + label + "]" : "") + ": " + message + "\n");
            chatLog.scrollV = chatLog.maxScrollV;
        }
        public function onBWDone(...args):void {}

        // ---- UI -----------------------------------------------------------------------------
        private function buildUi():void {
            var fmt:TextFormat = new TextFormat("_sans", 14);
            dest = field(10, 10, 300, 26, fmt, true);
            status = field(10, 40, 300, 22, fmt, false);
            sessionField = field(10, 62, 300, 22, fmt, false);
            var keys:Array = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#"];
            for (var i:int = 0; i < keys.length; i++) {
                addChild(button(keys[i], 10 + (i % 3) * 60, 95 + int(i / 3) * 45, 55, 40, digitHandler(keys[i])));
            }
            addChild(button("Call", 200, 95, 110, 40, function(e:MouseEvent):void { invite(dest.text); }));
            addChild(button("Hang up", 200, 140, 110, 40, function(e:MouseEvent):void { bye(); }));
            addChild(button("Hold", 200, 185, 110, 40, function(e:MouseEvent):void { nc.call("hold", null, true); show("on hold"); }));
            addChild(button("Resume", 200, 230, 110, 40, function(e:MouseEvent):void { nc.call("hold", null, false); show("resumed"); }));
            addChild(button("Accept", 200, 275, 110, 40, function(e:MouseEvent):void { accept(); }));
            addChild(button("Reject", 200, 320, 110, 40, function(e:MouseEvent):void { reject(); }));
            chatInput = field(10, 415, 230, 24, fmt, true);
            addChild(button("Send", 245, 415, 65, 24, function(e:MouseEvent):void { sendChat(); }));
            chatLog = field(10, 444, 300, 50, new TextFormat("_sans", 12), false);
            chatLog.multiline = true;
            chatLog.wordWrap = true;
        }

        private function digitHandler(d:String):Function {
            return function(e:MouseEvent):void { sendDigit(d); };
        }

        private function field(x:int, y:int, w:int, h:int, fmt:TextFormat, input:Boolean):TextField {
            var t:TextField = new TextField();
            t.defaultTextFormat = fmt;
            t.x = x; t.y = y; t.width = w; t.height = h;
            if (input) { t.type = TextFieldType.INPUT; t.border = true; t.background = true; }
            addChild(t);
            return t;
        }

        private function button(label:String, x:int, y:int, w:int, h:int, onClick:Function):Sprite {
            var b:Sprite = new Sprite();
            b.graphics.beginFill(0xdddddd);
            b.graphics.lineStyle(1, 0x888888);
            b.graphics.drawRoundRect(0, 0, w, h, 8, 8);
            b.graphics.endFill();
            var t:TextField = new TextField();
            t.defaultTextFormat = new TextFormat("_sans", 16, null, true, null, null, null, null, "center");
            t.text = label; t.width = w; t.height = h; t.y = (h - 22) / 2; t.selectable = false; t.mouseEnabled = false;
            b.addChild(t);
            b.x = x; b.y = y; b.buttonMode = true;
            b.addEventListener(MouseEvent.CLICK, onClick);
            return b;
        }

        private function show(text:String):void { status.text = text; }

        private static function majorVersion():int {
            // Capabilities.version is like "WIN 11,2,202,235"
            var parts:Array = Capabilities.version.split(" ");
            return parts.length > 1 ? int(String(parts[1]).split(",")[0]) : 0;
        }
    }
}
