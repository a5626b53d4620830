"""The operator's dashboard under ``/admin``: server-rendered pages on the operator's
services (``vidbatch.services``), the same calls as the admin API (``/api/admin``).

Signing in: the operator types ``VIDBATCH_ADMIN_TOKEN`` once; the answer is a session
cookie (HTTP-only, SameSite=Strict, path ``/admin``) holding an expiry and a nonce signed
with a key derived from the token, never the token itself. Changing the token ends every
session. Each form that changes something carries a CSRF token, an HMAC of the session,
checked before the action runs. With no admin token configured every page answers 404.

Live progress: the batch page polls ``/admin/batches/{id}/progress`` (a few numbers as
JSON) about once a second until the batch has settled.

``session`` signs sessions, CSRF tokens and flash messages; ``render`` formats and renders
pages; ``routing`` turns errors into pages; ``pages`` holds one module per group of pages;
``app`` assembles the router.
"""
