"""Call authorisation: signed call tokens (:mod:`webgate.security.tokens`) and the WebSocket
Origin allow-list (:mod:`webgate.security.origin`)."""
