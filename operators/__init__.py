"""Identity and tenancy: tenants, joint use, business systems, operators, permissions, registration."""
