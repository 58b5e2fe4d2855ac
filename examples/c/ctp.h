/* ctp.h: CThostFtdcDepthMarketDataField of CTP v6.3.6 (408 bytes, natural alignment), as in the
 * public header ThostFtdcUserApiStruct.h and src/mmipc/ctp.py, plus a deterministic tick for the
 * examples: tick i is a pure function of i, so a reader can check every byte it receives. */
#ifndef CTP_EXAMPLE_H
#define CTP_EXAMPLE_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    char TradingDay[9];
    char InstrumentID[31];
    char ExchangeID[9];
    char ExchangeInstID[31];
    double LastPrice;
    double PreSettlementPrice;
    double PreClosePrice;
    double PreOpenInterest;
    double OpenPrice;
    double HighestPrice;
    double LowestPrice;
    int Volume;
    double Turnover;
    double OpenInterest;
    double ClosePrice;
    double SettlementPrice;
    double UpperLimitPrice;
    double LowerLimitPrice;
    double PreDelta;
    double CurrDelta;
    char UpdateTime[9];
    int UpdateMillisec;
    struct {
        double BidPrice;
        int BidVolume;
        double AskPrice;
        int AskVolume;
    } level[5];
    double AveragePrice;
    char ActionDay[9];
} CThostFtdcDepthMarketDataField;

_Static_assert(sizeof(CThostFtdcDepthMarketDataField) == 408, "CTP v6.3.6 field is 408 bytes");

/* Tick number i of the examples' feed. */
static inline void
ctp_make_tick(CThostFtdcDepthMarketDataField *t, uint64_t i)
{
    memset(t, 0, sizeof(*t));
    memcpy(t->TradingDay, "20261127", 8);
    memcpy(t->InstrumentID, "rb2501", 6);
    memcpy(t->ExchangeID, "SHFE", 4);
    memcpy(t->ExchangeInstID, "rb2501", 6);
    t->LastPrice = 3500.0 + (double)(i % 100);
    t->PreSettlementPrice = 3480.0;
    t->PreClosePrice = 3490.0;
    t->OpenPrice = 3495.0;
    t->HighestPrice = 3600.0;
    t->LowestPrice = 3400.0;
    t->Volume = (int)(i & 0x7FFFFFFF);
    t->Turnover = (double)i * 10.0;
    t->OpenInterest = 100000.0 + (double)(i % 977);
    snprintf(t->UpdateTime, sizeof(t->UpdateTime), "%02u:%02u:%02u", (unsigned)(i / 3600 % 24),
             (unsigned)(i / 60 % 60), (unsigned)(i % 60));
    t->UpdateMillisec = (int)(i % 1000);
    for (int k = 0; k < 5; k++) {
        t->level[k].BidPrice = t->LastPrice - 1.0 - k;
        t->level[k].BidVolume = (int)((i + (uint64_t)k) % 500);
        t->level[k].AskPrice = t->LastPrice + 1.0 + k;
        t->level[k].AskVolume = (int)((i * 3 + (uint64_t)k) % 500);
    }
    t->AveragePrice = 3500.5;
    memcpy(t->ActionDay, "20261127", 8);
}

#endif
