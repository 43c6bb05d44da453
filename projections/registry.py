"""Every projection the platform keeps. Adding one = one module + one line here."""

from projections import customer, journeys, survey_answers
from projections.base import Projection

PROJECTIONS: tuple[Projection, ...] = (
    customer.PROJECTION,
    journeys.PROJECTION,
    survey_answers.PROJECTION,
)
