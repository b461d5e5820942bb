"""Call recording's media side (docs/recording.md): the stereo aligner and the RTP tap
(:mod:`.audio`), and the file writers (:mod:`.wav`: crash-safe WAV; :mod:`.ogg`: Opus in Ogg)."""
