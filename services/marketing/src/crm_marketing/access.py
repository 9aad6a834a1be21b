"""Who may do what in marketing (issue 4, capability 8).

- admin: everything;
- marketer: manages audience, consent, forms, site keys, segments, templates, campaigns, triggers;
- every other role (sales, service, analyst): reads campaign results only.
- the public endpoints (/public/...) take no user token: a site key and its origins admit them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from crm_runtime.http.auth import Principal, require

MANAGERS = ("marketer",)
RESULT_READERS = (
    "marketer",
    "sales_rep",
    "sales_manager",
    "service_agent",
    "service_manager",
    "analyst",
)

manage = require(*MANAGERS)
read_results = require(*RESULT_READERS)

Marketer = Annotated[Principal, Depends(manage)]
ResultReader = Annotated[Principal, Depends(read_results)]
