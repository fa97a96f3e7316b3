"""Trust: keys, certificates, the signed policy, sealing, and invite codes for enrollment."""
