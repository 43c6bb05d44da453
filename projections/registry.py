"""Every projection the platform keeps. Adding one = one module + one line here."""

from projections import customer, journeys, loyalty, survey_answers
from projections.base import Projection

PROJECTIONS: tuple[Projection, ...] = (
    customer.PROJECTION,
    journeys.PROJECTION,
    loyalty.PROJECTION,
    survey_answers.PROJECTION,
)
