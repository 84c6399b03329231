"""The EC2 provider: instances, their security group and key pair, prices; AWS is the truth."""
