"""The book's machinery, above the library.

:mod:`grace.book.notebooks` holds the notebooks' shared first cell and runs,
:mod:`grace.book.readings` the sentences that read their results, :mod:`grace.book.study` the
GRACE study's records, and :mod:`grace.book.reproduce` the batch reproduction and the book build.
Only the CLI's ``reproduce`` and ``book`` commands import it; the library does not.
"""
