"""Sales context: the system of record for leads, contacts, accounts, deals, quotes and invoices."""
