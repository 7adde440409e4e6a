"""The registry's exceptions. The HTTP layer maps each to a status; the message is shown to the user.

RegistryError
 ├── NotFound    → 404
 ├── Conflict    → 409 (a name that exists already)
 └── Invalid     → 400 (input that cannot be used; the message says what to do)
"""


class RegistryError(Exception):
    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class NotFound(RegistryError):
    pass


class Conflict(RegistryError):
    pass


class Invalid(RegistryError):
    pass
