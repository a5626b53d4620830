"""A faithful GrsAI simulator, as a real FastAPI app, with every fault the provider can show.

GrsAI endpoints (``{code, msg, data}`` envelope, business errors as HTTP 200):

* ``POST /v1/video/sora-video`` and ``POST /v1/video/veo`` create a task and answer
  ``{"code": 0, "data": {"id": "4-<uuid>"}}``. Refused with ``code -1``: a key that does not
  start with ``sk-`` (or is not ``api_key`` when one is set), a missing prompt, an unknown
  model (``sora-2``; ``veo3.1-fast``/``veo3.1-pro`` and their ``-1080p``/``-4k`` variants;
  ``veo3``/``veo3-fast`` are refused), a Sora duration other than 10/15, an aspect ratio
  other than 9:16/16:9, more than 3 ``urls``, ``lastFrameUrl`` without ``firstFrameUrl``.
  A missing ``webHook`` asks GrsAI for its streaming mode, which the simulator does not
  implement: it answers ``code -1`` "streaming mode not supported by simulator".
* ``POST /v1/draw/result`` with ``{"id"}`` answers the task object, or ``code -22`` for an
  unknown id. Status and progress are computed from the clock: progress rises linearly over
  the task's generation time (capped at 99 while running); a zero generation time means done
  at once. Sora puts the video in ``results[0]`` (``url``, ``removeWatermark``, ``pid``), Veo in
  a top-level ``url``.
* ``GET /files/<id>.mp4`` serves a small real MP4 for a succeeded task, until ``result_ttl``
  seconds after it finished (404 after). URLs are built from ``public_url`` or else from the
  Host the create request came in on.
* Callbacks: when ``webHook`` is a URL the bare task object is POSTed to it, every
  ``callback_interval`` seconds while running (unless ``shutProgress``), then once at the end.

Control API (not part of GrsAI): ``GET/POST /_sim/config`` (POST takes any subset of
:class:`SimulatorConfig` fields), ``POST /_sim/reset`` (forget tasks, stats and records,
reseed), ``POST /_sim/release`` (held tasks end now), ``GET /_sim/stats``,
``GET /_sim/requests`` (every request received, without headers), ``GET /_sim/callbacks``
(every delivery), ``GET /_sim/tasks``, ``GET /_sim/health``.

Determinism: one ``random.Random(seed)`` makes every decision; each task's callback faults use
a generator seeded from it at creation. The same seed and the same sequence of requests give
the same ids and outcomes. Draws for HTTP faults are only made while their rates are non-zero,
so polling does not shift task outcomes.

Generation time (``gen_time_mode``): ``fixed`` (``gen_time``), ``uniform``
(``gen_time_min``..``gen_time_max``) or ``lognormal`` (median ``gen_time``, shape
``gen_time_sigma``, clamped to ``gen_time_min``..``gen_time_max``).

Prompt markers force an outcome whatever the rates say:

=========================  ==============================================================
``[sim:moderation]``       fails with ``failure_reason`` ``output_moderation`` (after the
                           generation time, like the real moderation)
``[sim:input_moderation]`` fails with ``input_moderation``
``[sim:error]``            fails with ``error`` ("Failed to generate, system error ...")
``[sim:violation]``        ends with status ``violation``
``[sim:no-url]``           "succeeds" without a video URL
``[sim:reject]``           refused at create (``code -1``)
``[sim:slow]``             takes 10 times the generation time
``[sim:hang]``             never finishes (runs forever, no final callback)
``[sim:hold]``             runs until ``POST /_sim/release`` and ends then (as every
                           task made while the ``hold`` knob is set)
``[sim:ambiguous]``        the create makes the task but never answers the client
=========================  ==============================================================

Concurrency cap: with ``max_running`` set, a create arriving while that many tasks run gets
HTTP 429 with ``Retry-After`` and counts as a ``cap_overshoots`` in the stats.

Hanging calls: ``create_hang_rate`` makes the task and then holds the connection without
answering until the client closes it (or ``hang_max`` passes) - the ambiguous create;
``result_hang_rate`` does the same to a poll. ``outage`` makes every GrsAI and file endpoint
answer HTTP 500; the ``*_429_rate`` / ``*_500_rate`` knobs do so at random, per endpoint kind.

Callback faults (each drawn per delivery): ``callback_loss_rate`` (never sent),
``callback_duplicate_rate`` (sent twice), ``callback_delay_rate`` (sent ``callback_delay``
seconds late, possibly after later ones), ``callback_reorder_rate`` (a progress callback held
back until after the final one).
"""

from vidbatch.providers.simulator.app import create_app, sample_video, serve
from vidbatch.providers.simulator.config import SimulatorConfig

__all__ = ["SimulatorConfig", "create_app", "sample_video", "serve"]
