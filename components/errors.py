"""The one base class of the errors a user can fix, at the bottom of the package so that every
layer (module code, the pipeline's config, the tools) can raise it.

`fakedetect` turns any UserError into its message and exit status 1, never a traceback; every
other exception is a bug and keeps its traceback.
"""


class UserError(ValueError):
  """A setting, folder, file or model the user gave is wrong or missing; the message says what
  was wrong and what to do about it."""
