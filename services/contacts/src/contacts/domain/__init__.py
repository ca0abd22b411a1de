"""The contacts domain: entities, validation rules and events, pure and without I/O.

* :mod:`~contacts.domain.phones`: phones to canonical E.164 (Brazilian 9th digit included).
* :mod:`~contacts.domain.model`: the :class:`~contacts.domain.model.Contact` entity, its
  drafts and patches, custom field definitions, and validation errors.
* :mod:`~contacts.domain.optout`: opt-out and opt-in keywords of inbound messages.
* :mod:`~contacts.domain.lists`: contact lists and their names.
* :mod:`~contacts.domain.importing`: streaming CSV/XLSX readers, column mapping, and import
  rows turned into drafts or row-level errors.
* :mod:`~contacts.domain.events`: the ``ContactEvent`` records of ``contacts.events.v1``.

The service layer loads and stores these objects and writes the events to the outbox; none
of these modules reaches a database, a broker or the clock (times are always passed in).
"""
