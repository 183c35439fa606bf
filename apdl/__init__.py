"""apdl: the AP download module (カードAPダウンロードモジュール).

A separate application that loads card applications (カードAP) onto residents' cards.
It never imports opauth's packages; it talks to opauth only over HTTPS as a business system.
"""
