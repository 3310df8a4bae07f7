from __future__ import annotations

from service.models import User
from service.schemas.base import SERVER_MANAGED, InputSchema, OutputSchema

# Never rendered: the hash is a secret, the key and version are internal.
_HIDDEN = ("password_hash", "email_key", "version")


class UserSchema(OutputSchema):
    class Meta(OutputSchema.Meta):
        model = User
        exclude = _HIDDEN


class UserInputSchema(InputSchema):
    """The plain fields a payload may set; the password is hashed by the handler."""

    class Meta(InputSchema.Meta):
        model = User
        exclude = (*SERVER_MANAGED, *_HIDDEN, "last_login_at")
