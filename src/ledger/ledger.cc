#include "ledger/ledger.h"

namespace rsv {

std::string_view EntryKindName(EntryKind k) {
  switch (k) {
    case EntryKind::kSpotCharge:
      return "spot_charge";
    case EntryKind::kReservationCharge:
      return "reservation_charge";
    case EntryKind::kReturnCredit:
      return "return_credit";
  }
  return "?";
}

Status Ledger::Post(const LedgerEntry& entry) {
  Money sum;
  for (const Posting& p : entry.postings) sum += p.amount;
  if (sum != Money()) {
    return Internal("ledger entry does not balance: postings sum to " + sum.ToString());
  }
  for (const Posting& p : entry.postings) {
    Totals* totals = &operator_totals_;
    if (!p.account.is_operator()) {
      size_t t = p.account.tenant.value();
      if (tenant_totals_.size() <= t) tenant_totals_.resize(t + 1);
      totals = &tenant_totals_[t];
      if (entry.kind == EntryKind::kSpotCharge && p.amount > Money()) lending_credits_ += p.amount;
    }
    totals->balance += p.amount;
    (p.amount < Money() ? totals->charges : totals->credits) += p.amount;
  }
  if (keep_entries_) {
    entries_.push_back(entry);
    entries_.back().seq = next_seq_;
  }
  ++next_seq_;
  return Status::Ok();
}

Ledger::Totals Ledger::TotalsOf(Account a) const {
  if (a.is_operator()) return operator_totals_;
  size_t t = a.tenant.value();
  return t < tenant_totals_.size() ? tenant_totals_[t] : Totals{};
}

Money Ledger::Sum() const {
  Money s = operator_totals_.balance;
  for (const Totals& m : tenant_totals_) s += m.balance;
  return s;
}

}  // namespace rsv
