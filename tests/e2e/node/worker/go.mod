module referral-operator/testbed/node/worker

go 1.24
