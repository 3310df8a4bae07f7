"""WIP placeholder: being written."""


def list_api_keys(*args, **kwargs):
    raise NotImplementedError


def create_api_key(*args, **kwargs):
    raise NotImplementedError


def revoke_api_key(*args, **kwargs):
    raise NotImplementedError
