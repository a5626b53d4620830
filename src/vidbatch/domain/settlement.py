"""Settlement arithmetic: what a batch is charged and what it gets back."""

from __future__ import annotations

from dataclasses import dataclass

from vidbatch.domain.states import SettlementStatus


@dataclass(frozen=True)
class SettlementFigures:
    reserved: int
    already_refunded: int
    charged: int
    refund_now: int

    @property
    def refunded(self) -> int:
        return self.already_refunded + self.refund_now

    @property
    def settlement_status(self) -> SettlementStatus:
        return SettlementStatus.REFUNDED if self.refunded > 0 else SettlementStatus.FINALIZED


def settle_figures(reserved: int, already_refunded: int, succeeded_cost: int) -> SettlementFigures:
    """Charge the succeeded items' cost; release whatever of the reservation is left.

    ``charged + refunded == reserved`` always holds; a charge can never exceed what is
    still reserved (that would be a bug upstream, so it raises).
    """
    outstanding = reserved - already_refunded
    if succeeded_cost < 0 or outstanding < 0 or succeeded_cost > outstanding:
        raise ValueError(
            f"cannot charge {succeeded_cost} of a reservation with {outstanding} outstanding"
        )
    return SettlementFigures(
        reserved=reserved,
        already_refunded=already_refunded,
        charged=succeeded_cost,
        refund_now=outstanding - succeeded_cost,
    )
