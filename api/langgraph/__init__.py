"""The LangGraph Platform API subset that the official ``langgraph_sdk`` client drives:
assistants, threads, runs on a thread (create, stream, join, get, list, resume) and crons.

Map (details in ``api.langgraph.shapes`` and ``driftpilot.runs.threads``):

- ``assistants.search/get``: the managed models (``assistant_id`` = model name, ``graph_id``
  ``control``) and the ``control`` graph itself (the model goes in the run's input).
- ``threads.create``: a placeholder thread; the first run on it creates a control run and
  binds the thread to it. A control run's own id is a thread too. One thread, one run.
- ``assistants.get_graph/get_schemas``: the control graph's nodes and edges, and the JSON
  schemas of a run's input, output, state, config and context (one graph: the same for
  every assistant).
- ``threads.get/get_state/search``: the run's status, values (the run summary) and its
  interrupt (the Agent Inbox ``HumanInterrupt``); ``status="interrupted"`` lists the runs
  waiting for approval. ``threads.update_state`` and ``threads.update`` are refused (422):
  only the agents write a run's state.
- ``runs.create/stream`` with ``input={"model": ..., "batch": {"dataset": ...} | {"path":
  ...}}`` (the batch of ``POST /runs``) start a control run on the thread (operator role);
  with ``command={"resume": ...}`` they decide its approval (approver role, never the
  requester): ``{"decision": "approve" | "reject", "comment": ...}`` or an Agent Inbox
  ``HumanResponse``: ``accept`` approves, ``ignore`` rejects, ``response`` rejects with
  its text as the comment (``edit`` is not offered).
- ``runs.join`` waits until the run ends or waits for a person and answers its values. A
  run reads back with the ``multitask_strategy`` it was created with.
- ``crons.create/search/delete``: schedules, with ``input={"source": ...}`` (a schedule's
  batch source: ``{"dataset": "flights", "start": "2013-10"}``, ``{"glob": ...}``,
  ``{"gdelt": {}}``).

Errors are problem+json like the rest of the API. Options this API cannot honour
(``interrupt_before``, ``webhook``, ``after_seconds``, checkpoints, the ``interrupt`` and
``rollback`` multitask strategies, ``command.goto``/``update``) are refused with 422 rather
than ignored.

Modules: ``common`` (the request bodies' base, paging, refusals), ``shapes`` (LangGraph's
resource shapes), ``stream`` (its event stream), and one router per resource:
``assistants``, ``threads``, ``runs`` and ``crons`` (api/app.py includes them in that order).
"""
