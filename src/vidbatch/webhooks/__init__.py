"""Customer webhooks: signed with the Standard Webhooks scheme, delivered from the outbox.

Receivers check a webhook with :func:`verify`; the worker delivers due events with
:func:`vidbatch.webhooks.delivery.deliver_due`.
"""

from vidbatch.webhooks.signing import WebhookVerificationError, verify

__all__ = ["WebhookVerificationError", "verify"]
