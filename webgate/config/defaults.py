"""The embedded default configuration, as TOML text.

:data:`DEFAULT_TOML` is what ``webgate`` runs with when no file is given, and what an empty
file means; ``webgate.example.toml`` documents the same values, and a test checks that the
two, and the dataclass defaults of :mod:`webgate.config.model`, agree.
"""

from __future__ import annotations

from webgate import __version__

DEFAULT_TOML = f"""\
[http]
listen = "127.0.0.1:8080"
tls_listen = ""
tls_cert = ""
tls_key = ""
allowed_origins = []
max_connections = 1024
max_connections_per_ip = 128
request_timeout_s = 10

[rtmp]
listen = "127.0.0.1:1935"
max_chunk_size = 65536
max_message_size = 1048576
max_streams_per_connection = 8
max_connections_per_ip = 20
max_connections = 256
handshake_timeout_s = 10
idle_timeout_s = 60
partial_timeout_s = 10
max_buffer_bytes = 2097152
player_max_queue_ms = 1000
player_max_behind_s = 10
player_send_buffer = 16384
play_failures_before_close = 3
tls_listen = ""
tls_cert = ""
tls_key = ""

[sip]
udp = "127.0.0.1:5060"
tcp = "127.0.0.1:5060"
tls = ""
tls_cert = ""
tls_key = ""
tls_ca = ""
advertised_address = ""
user_agent = "webgate/{__version__}"
t1_ms = 500
t2_ms = 4000
t4_ms = 5000
max_message_size = 65535
outbound_proxy = ""
from_domain = ""
inbound_from = ["trunks", "loopback"]
honour_maddr = false
max_connections = 256
max_connections_per_ip = 32
idle_timeout_s = 120
partial_timeout_s = 10
max_send_buffer = 262144
send_stall_s = 30
dns_servers = []
failover_timeout_s = 4

[rtp]
bind = "127.0.0.1"
advertised_address = ""
port_min = 20000
port_max = 20999
jitter_min_ms = 20
jitter_max_ms = 200
strict_source = true
relearn_after_s = 0
media_io = "native"
read_interval_ms = 2

[session_id]
length = 10
header = "X-Session-ID"
mode = "header"
reuse_after_s = 3600

[builtin]
enabled = true
tone_hz = 1000
echo = "echo"
tone = "tone"
public = true
sip_from = ["loopback"]

[limits]
max_calls = 100
max_call_duration_s = 3600
max_calls_per_identity = 10
max_calls_per_ip = 10
max_attempts_per_ip_per_minute = 60

[log]
format = "text"
level = "info"

[webrtc]
ice_servers = []
ice_timeout_s = 15
max_message_size = 65536
idle_timeout_s = 60
max_playout_ms = 200
direct_audio = true
max_errors = 20
max_connections = 512
max_connections_per_ip = 32
max_remote_candidates = 64
allow_private_candidates = false

[tokens]
key = ""
issuer = ""
audience = ""
leeway_s = 30

[video]
max_watchers_per_call = 4
max_bitrate_kbps = 1500
transcode = false
max_data_bytes = 65536
data_rate_per_s = 100

[api]
admin_key = ""
metrics = true

[cdr]
file = ""
webhook_url = ""
webhook_timeout_s = 5
webhook_retries = 3

[recording]
dir = "recordings"
path = "{{date}}/{{session_id}}"
format = "wav"
min_free_mb = 500
flush_s = 1.0
record_beep_s = 0
record_announcement = ""
repair_days = 2

[shutdown]
timeout_s = 10

[codecs]
bcg729_library = "libbcg729.so.0"
amrnb_library = "libopencore-amrnb.so.0"
amrwb_library = "libopencore-amrwb.so.0"
amrwbenc_library = "libvo-amrwbenc.so.0"
spandsp_library = "libspandsp.so.2"
opus_library = "libopus.so.0"

[cluster]
enabled = false
redis_url = "redis://127.0.0.1:6379/0"
node_id = ""
ws_url = ""
rtmp_url = ""
sip_contact = ""
heartbeat_s = 2
node_ttl_s = 6
on_redis_down = "refuse"
registrar = ""
"""
