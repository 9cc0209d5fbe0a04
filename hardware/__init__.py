"""hardware: device profiles (data) and sans-IO codecs.  Pure: bytes in, frames and values out.

A new device of a known protocol is a new profile file in ``hardware/profiles/``, no code.
"""
