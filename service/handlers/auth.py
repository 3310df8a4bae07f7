"""WIP placeholder: being written."""


def login(*args, **kwargs):
    raise NotImplementedError


def logout(*args, **kwargs):
    raise NotImplementedError


def request_password_reset(*args, **kwargs):
    raise NotImplementedError


def confirm_password_reset(*args, **kwargs):
    raise NotImplementedError
