"""View aggregation and hyper-parameter searches on cached components (docs/method.md §5).

Symbols: ``B`` clouds, ``V`` views, ``K`` classes, ``m`` searched views, ``G`` grid values.

Components ``(B, V, 3, K)`` are, per view, ``[s g.T^T, s g.T_a^T, s p.T^T]``; the logits are

    logits = (1/sqrt(V)) * sum_v w_v * (c_global + beta2 c_text + beta3 c_visual)_v

Every search works on the cached components, so no image is re-encoded, and every search
streams over the clouds in chunks whose temporaries stay under ``max_bytes`` (see
:func:`chunk_size`), so memory does not grow with ``B * K`` times the grid size.

Decision rule shared by every search and by its reference: a cloud is correct when the
``argmax`` of its logits is its label, and ``argmax`` returns the *lowest* index among equal
maxima (``torch.argmax``), so class ``k`` beats the label ``l`` when
``logit_k > logit_l`` (``k > l``) or ``logit_k >= logit_l`` (``k < l``).
Ties between candidates keep the starting values: a search moves away from them only on a
strictly higher number of correct clouds; among equal candidates the first in grid order wins.

Each fast search has a slow reference (``*_naive``) beside it that loops over every
candidate and calls ``argmax``; the tests compare the two on fresh random inputs.

Modules: ``common`` (constants, checks, the weighted view sum, counting), ``grid`` (exact
counts over a product grid of view weights), ``view_weights`` (exhaustive / coordinate
search), ``betas`` (the ``(beta2, beta3)`` grid), ``search`` (both, as evaluation runs them).
"""

from pointcalip.aggregation.betas import beta_grid_accuracy, beta_grid_accuracy_naive, search_betas, search_betas_naive
from pointcalip.aggregation.common import (
    BETA2_RANGE, BETA3_RANGE, BETA_STEPS, COORDINATE_BLOCK, COORDINATE_MAX_SWEEPS, COORDINATE_RESTARTS,
    DEFAULT_MAX_BYTES, EXHAUSTIVE_HARD_LIMIT, EXHAUSTIVE_LIMIT, ORACLE_LABEL, SEARCH_MODES, STRATEGIES,
    V2_FIXED_WEIGHT, V2_SEARCH_VIEWS, VIEW_WEIGHT_GRID, accuracy, aggregate_views, chunk_size, count_correct,
    count_correct_naive, logits_from_components)
from pointcalip.aggregation.grid import grid_counts, grid_counts_naive
from pointcalip.aggregation.search import SearchResult, run_search
from pointcalip.aggregation.view_weights import (
    ViewWeightSearch, coordinate_ascent_naive, search_view_weights, search_view_weights_naive)

__all__ = [
    "BETA2_RANGE", "BETA3_RANGE", "BETA_STEPS", "COORDINATE_BLOCK", "COORDINATE_MAX_SWEEPS", "COORDINATE_RESTARTS",
    "DEFAULT_MAX_BYTES", "EXHAUSTIVE_HARD_LIMIT", "EXHAUSTIVE_LIMIT", "ORACLE_LABEL", "SEARCH_MODES", "STRATEGIES",
    "V2_FIXED_WEIGHT", "V2_SEARCH_VIEWS", "VIEW_WEIGHT_GRID", "SearchResult", "ViewWeightSearch", "accuracy",
    "aggregate_views", "beta_grid_accuracy", "beta_grid_accuracy_naive", "chunk_size", "coordinate_ascent_naive",
    "count_correct", "count_correct_naive", "grid_counts", "grid_counts_naive", "logits_from_components",
    "run_search", "search_betas", "search_betas_naive", "search_view_weights", "search_view_weights_naive",
]
