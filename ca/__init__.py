"""The PKI engine: CA hierarchy, signers, profiles, CSR vetting, issuance, revocation, CRL, OCSP, validation.

It imports only the kernel (errors, the audit log), settings, the database and third-party libraries, so it
can be driven from a script with a database session and a signer. Who may ask for what is decided by the
services and surfaces that call it.
"""
