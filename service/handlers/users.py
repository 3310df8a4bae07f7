"""WIP placeholder: being written."""


def list_users(*args, **kwargs):
    raise NotImplementedError


def create_user(*args, **kwargs):
    raise NotImplementedError


def get_current_user(*args, **kwargs):
    raise NotImplementedError


def get_user(*args, **kwargs):
    raise NotImplementedError


def update_user(*args, **kwargs):
    raise NotImplementedError


def deactivate_user(*args, **kwargs):
    raise NotImplementedError
