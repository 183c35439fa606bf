"""Certificates for business systems on top of the PKI engine: business server and SSL communication
certificates, 照会 by 業務ID, signed audit checkpoints, and the CA's web UI, API, CLI and /pki/ endpoints."""
