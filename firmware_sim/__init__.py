"""firmware_sim: simulated devices that speak the real protocols, with fault injection.

The bytes are produced here, independently of ``hardware``'s codecs (a shared bug would pass its
own tests); both sides are checked against golden byte fixtures in ``tests/fixtures/``.
"""
