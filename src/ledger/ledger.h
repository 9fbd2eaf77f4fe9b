// ledger: double-entry accounting of Reservoir's money. Every entry's postings sum to zero, so
// the whole ledger always does. Owns accounts (one per tenant, one for the operator), balances,
// per-job charge totals and the entry journal. Amounts are computed by the scheduler from
// integer prices; the ledger only refuses entries that do not balance.
// Depends on core/ and common/ only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/ids.h"
#include "common/status.h"
#include "common/units.h"

namespace rsv {

// An account: a tenant's, or the operator's (tenant id invalid).
struct Account {
  TenantId tenant;
  static Account Operator() { return Account{}; }
  static Account Of(TenantId t) { return Account{t}; }
  bool is_operator() const { return !tenant.valid(); }
  auto operator<=>(const Account&) const = default;
};

struct Posting {
  Account account;
  Money amount;  // positive: credit to the account; negative: charge
};

enum class EntryKind { kSpotCharge, kReservationCharge, kReturnCredit };
std::string_view EntryKindName(EntryKind k);

struct LedgerEntry {
  int64_t seq = 0;
  Timestamp at;
  EntryKind kind = EntryKind::kSpotCharge;
  PoolId pool;
  JobId job;                  // spot charge of one job
  ReservationId reservation;  // reservation charge or return credit
  std::vector<Posting> postings;
};

class Ledger {
 public:
  // Refuses (and changes nothing) when the postings do not sum to zero.
  Status Post(const LedgerEntry& entry);

  Money Balance(Account a) const { return TotalsOf(a).balance; }
  // All an account was ever charged (negative) and credited.
  Money Charges(Account a) const { return TotalsOf(a).charges; }
  Money Credits(Account a) const { return TotalsOf(a).credits; }
  Money Sum() const;  // of all balances; zero unless something is badly wrong
  // Everything spot charges have credited to tenants (owners of lent GPUs), gross.
  Money LendingCredits() const { return lending_credits_; }
  const std::vector<LedgerEntry>& entries() const { return entries_; }
  // The simulator posts millions of charges; it may keep only balances.
  void set_keep_entries(bool keep) { keep_entries_ = keep; }

 private:
  friend struct StateIo;  // snapshots (scheduler/state_io.cc)
  std::vector<LedgerEntry> entries_;
  struct Totals {
    Money balance, charges, credits;
  };
  Totals TotalsOf(Account a) const;
  std::vector<Totals> tenant_totals_;  // index = tenant id
  Totals operator_totals_;
  Money lending_credits_;
  int64_t next_seq_ = 1;
  bool keep_entries_ = true;
};

}  // namespace rsv
