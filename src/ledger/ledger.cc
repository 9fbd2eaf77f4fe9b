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
    if (p.account.is_operator()) {
      operator_balance_ += p.amount;
      continue;
    }
    size_t t = p.account.tenant.value();
    if (tenant_balance_.size() <= t) tenant_balance_.resize(t + 1);
    tenant_balance_[t] += p.amount;
    if (entry.kind == EntryKind::kSpotCharge && p.amount > Money()) lending_credits_ += p.amount;
  }
  if (keep_entries_) {
    entries_.push_back(entry);
    entries_.back().seq = next_seq_;
  }
  ++next_seq_;
  return Status::Ok();
}

Money Ledger::Balance(Account a) const {
  if (a.is_operator()) return operator_balance_;
  size_t t = a.tenant.value();
  return t < tenant_balance_.size() ? tenant_balance_[t] : Money();
}

Money Ledger::Sum() const {
  Money s = operator_balance_;
  for (Money m : tenant_balance_) s += m;
  return s;
}

}  // namespace rsv
